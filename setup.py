"""The optional C part: alf._gcm, AES-256-GCM over a batch of datagrams (alf/seal.py).

Without a C compiler or OpenSSL's headers (Debian: gcc, libssl-dev) the build skips it and
alf seals in Python, correctly and more slowly (docs/performance.md, "Encryption").
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "alf._gcm",
            ["alf/_gcm.c"],
            libraries=["crypto"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
