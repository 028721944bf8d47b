/* AES-256-GCM over a batch of datagrams in one call (docs/protocol.md §17, alf/seal.py).
 *
 * alf seals every datagram on its own, so one lost or forged datagram costs only itself.
 * Through `cryptography` that is one Python call per datagram, and the call, not the cipher,
 * is most of the cost (docs/performance.md, "Encryption"). This module does the same
 * per-datagram AEAD, with the same layout and nonces, over a whole GSO batch or GRO buffer
 * in one call: OpenSSL's EVP interface, each direction's context keyed once and given a fresh
 * nonce per datagram. It is optional: without it alf/seal.py does the same in Python.
 *
 * Layout of a sealed datagram (protocol §17): head (clear), packet number (8 bytes, big
 * endian, clear), body (encrypted), tag (16). Associated data: head and number. Nonce: the
 * direction's 12-byte IV with the number XORed into its last 8 bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

#define KEY_SIZE 32
#define NONCE_SIZE 12
#define PN_SIZE 8
#define TAG_SIZE 16

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    unsigned char iv[NONCE_SIZE];
    int busy; /* a call runs without the GIL: a second one on the same object is refused */
} Gcm;

static void nonce_of(const unsigned char *iv, uint64_t pn, unsigned char *out) {
    memcpy(out, iv, NONCE_SIZE);
    for (int i = 0; i < 8; i++)
        out[4 + i] ^= (unsigned char)(pn >> (56 - 8 * i));
}

static uint64_t be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* Encrypts len bytes of in to out and puts the tag after them; 1 on success. */
static int seal_one(EVP_CIPHER_CTX *c, const unsigned char *nonce, const unsigned char *aad, int aadlen,
                    const unsigned char *in, int len, unsigned char *out) {
    int n;
    if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) != 1)
        return 0;
    if (EVP_EncryptUpdate(c, NULL, &n, aad, aadlen) != 1)
        return 0;
    if (len > 0 && EVP_EncryptUpdate(c, out, &n, in, len) != 1)
        return 0;
    if (EVP_EncryptFinal_ex(c, out + len, &n) != 1)
        return 0;
    return EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, out + len) == 1;
}

/* Decrypts len bytes in place and checks the tag that follows them; 1 if it checks. */
static int open_one(EVP_CIPHER_CTX *c, const unsigned char *nonce, const unsigned char *aad, int aadlen,
                    unsigned char *data, int len) {
    int n;
    unsigned char tag[TAG_SIZE];
    memcpy(tag, data + len, TAG_SIZE);
    if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) != 1)
        return 0;
    if (EVP_DecryptUpdate(c, NULL, &n, aad, aadlen) != 1)
        return 0;
    if (len > 0 && EVP_DecryptUpdate(c, data, &n, data, len) != 1)
        return 0;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, tag) != 1)
        return 0;
    return EVP_DecryptFinal_ex(c, data + len, &n) == 1;
}

static int Gcm_init(Gcm *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"key", "iv", NULL};
    Py_buffer key, iv;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*", kwlist, &key, &iv))
        return -1;
    int ok = key.len == KEY_SIZE && iv.len == NONCE_SIZE;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "a key is 32 bytes and an IV 12");
    } else if (self->enc == NULL) { /* (both contexts are made and keyed, or neither is) */
        memcpy(self->iv, iv.buf, NONCE_SIZE);
        self->enc = EVP_CIPHER_CTX_new();
        self->dec = EVP_CIPHER_CTX_new();
        ok = self->enc && self->dec &&
             EVP_EncryptInit_ex(self->enc, EVP_aes_256_gcm(), NULL, key.buf, self->iv) == 1 &&
             EVP_DecryptInit_ex(self->dec, EVP_aes_256_gcm(), NULL, key.buf, self->iv) == 1;
        if (!ok) {
            EVP_CIPHER_CTX_free(self->enc);
            EVP_CIPHER_CTX_free(self->dec);
            self->enc = self->dec = NULL;
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-256-GCM");
        }
    } else {
        ok = 0;
        PyErr_SetString(PyExc_RuntimeError, "a Gcm is keyed once");
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&iv);
    return ok ? 0 : -1;
}

static void Gcm_dealloc(Gcm *self) {
    EVP_CIPHER_CTX_free(self->enc);
    EVP_CIPHER_CTX_free(self->dec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int take(Gcm *self) {
    if (self->enc == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the Gcm has no key");
        return 0;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the Gcm is in use by another thread");
        return 0;
    }
    self->busy = 1;
    return 1;
}

static void release_all(Py_buffer *views, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        PyBuffer_Release(&views[i]);
}

PyDoc_STRVAR(seal_batch_doc,
             "seal_batch(out, stride, heads, bodies, pn, epoch_bits) -> list[int]\n\n"
             "Datagram k sealed into out at k * stride: heads[k], packet number pn + k, bodies[k]\n"
             "encrypted, its tag. Every head has one length; every number of the batch is of one\n"
             "epoch (number >> epoch_bits: one key). Returns the k whose body is shorter than the\n"
             "slot's (its sealed part ends early).");

static PyObject *Gcm_seal_batch(Gcm *self, PyObject *args) {
    Py_buffer out;
    Py_ssize_t stride;
    PyObject *heads, *bodies;
    unsigned long long pn;
    int epoch_bits;
    if (!PyArg_ParseTuple(args, "w*nO!O!Ki", &out, &stride, &PyList_Type, &heads, &PyList_Type, &bodies, &pn,
                          &epoch_bits))
        return NULL;
    PyObject *result = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t got = 0;
    Py_ssize_t n = PyList_GET_SIZE(heads);
    if (n != PyList_GET_SIZE(bodies) || n < 1 || stride < 1 || n > out.len / stride) {
        PyErr_SetString(PyExc_ValueError, "heads and bodies must pair up and fit in out");
        goto done;
    }
    if (epoch_bits < 1 || epoch_bits > 63 || pn + (unsigned long long)(n - 1) < pn ||
        pn >> epoch_bits != (pn + (unsigned long long)(n - 1)) >> epoch_bits) {
        PyErr_SetString(PyExc_ValueError, "a batch's packet numbers must be of one epoch");
        goto done;
    }
    if (!take(self))
        goto done;
    views = PyMem_Calloc((size_t)(2 * n), sizeof(Py_buffer));
    if (views == NULL) {
        PyErr_NoMemory();
        goto unbusy;
    }
    Py_ssize_t h = -1;
    for (Py_ssize_t k = 0; k < n; k++) {
        for (int part = 0; part < 2; part++) { /* its head, then its body */
            PyObject *list = part ? bodies : heads;
            if (PyList_GET_SIZE(list) != n) { /* (a buffer's exporter changed it meanwhile) */
                PyErr_SetString(PyExc_RuntimeError, "heads or bodies changed while being read");
                goto unbusy;
            }
            if (PyObject_GetBuffer(PyList_GET_ITEM(list, k), &views[got], PyBUF_SIMPLE) < 0)
                goto unbusy;
            got++;
        }
        if (h < 0)
            h = views[got - 2].len;
        if (views[got - 2].len != h || h + PN_SIZE + TAG_SIZE + views[got - 1].len > stride ||
            views[got - 1].len > INT_MAX || h > INT_MAX - PN_SIZE) {
            PyErr_SetString(PyExc_ValueError, "a head of another length, or a datagram longer than the stride");
            goto unbusy;
        }
    }
    int ok = 1;
    unsigned char *base = out.buf;
    Py_BEGIN_ALLOW_THREADS
    unsigned char nonce[NONCE_SIZE];
    for (Py_ssize_t k = 0; k < n && ok; k++) {
        unsigned char *slot = base + k * stride;
        memcpy(slot, views[2 * k].buf, (size_t)h);
        put_be64(slot + h, pn + (unsigned long long)k);
        nonce_of(self->iv, pn + (unsigned long long)k, nonce);
        ok = seal_one(self->enc, nonce, slot, (int)(h + PN_SIZE), views[2 * k + 1].buf, (int)views[2 * k + 1].len,
                      slot + h + PN_SIZE);
    }
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to seal a datagram");
        goto unbusy;
    }
    result = PyList_New(0);
    for (Py_ssize_t k = 0; result && k < n; k++) {
        if (h + PN_SIZE + TAG_SIZE + views[2 * k + 1].len != stride) {
            PyObject *i = PyLong_FromSsize_t(k);
            if (i == NULL || PyList_Append(result, i) < 0)
                Py_CLEAR(result);
            Py_XDECREF(i);
        }
    }
unbusy:
    self->busy = 0;
    if (views) {
        release_all(views, got);
        PyMem_Free(views);
    }
done:
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(open_segments_doc,
             "open_segments(buf, segment, head, epoch_bits, epoch, kinds) -> (failed, other, highest)\n\n"
             "Opens in place every datagram of buf, segment bytes each (the last may be shorter):\n"
             "each stays head, number, plain body, tag. failed: the offsets of those that did not\n"
             "open (too short, a kind byte not in kinds, or a tag that fails); other: the offsets\n"
             "of those whose number is of another epoch (number >> epoch_bits), left untouched;\n"
             "highest: the largest number that opened, or -1 if none did.");

static PyObject *Gcm_open_segments(Gcm *self, PyObject *args) {
    Py_buffer buf, kinds;
    Py_ssize_t segment, head;
    int epoch_bits;
    unsigned long long epoch;
    if (!PyArg_ParseTuple(args, "w*nniKy*", &buf, &segment, &head, &epoch_bits, &epoch, &kinds))
        return NULL;
    PyObject *result = NULL;
    unsigned char *flags = NULL; /* per segment: 0 opened, 1 failed, 2 other epoch */
    if (segment < 1 || head < 2 || head > segment || segment > INT_MAX || epoch_bits < 0 || epoch_bits > 63) {
        PyErr_SetString(PyExc_ValueError, "a bad segment, head or epoch size");
        goto done;
    }
    if (!take(self))
        goto done;
    Py_ssize_t n = buf.len;
    Py_ssize_t count = n / segment + (n % segment != 0);
    flags = PyMem_Malloc((size_t)count + 1);
    if (flags == NULL) {
        PyErr_NoMemory();
        goto unbusy;
    }
    unsigned long long highest = 0;
    int any = 0;
    unsigned char *base = buf.buf;
    const unsigned char *allowed = kinds.buf;
    Py_ssize_t nkinds = kinds.len;
    Py_BEGIN_ALLOW_THREADS
    unsigned char nonce[NONCE_SIZE];
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned char *d = base + i * segment;
        Py_ssize_t len = n - i * segment < segment ? n - i * segment : segment;
        flags[i] = 1;
        if (len < head + PN_SIZE + TAG_SIZE)
            continue;
        int kind_ok = 0;
        for (Py_ssize_t j = 0; j < nkinds; j++)
            kind_ok |= d[1] == allowed[j];
        if (!kind_ok)
            continue;
        uint64_t pn = be64(d + head);
        if (pn >> epoch_bits != epoch) {
            flags[i] = 2;
            continue;
        }
        nonce_of(self->iv, pn, nonce);
        if (open_one(self->dec, nonce, d, (int)(head + PN_SIZE), d + head + PN_SIZE,
                     (int)(len - head - PN_SIZE - TAG_SIZE))) {
            flags[i] = 0;
            if (!any || pn > highest)
                highest = pn;
            any = 1;
        }
    }
    Py_END_ALLOW_THREADS
    PyObject *failed = PyList_New(0), *other = PyList_New(0);
    for (Py_ssize_t i = 0; failed && other && i < count; i++) {
        if (flags[i] == 0)
            continue;
        PyObject *at = PyLong_FromSsize_t(i * segment);
        if (at == NULL || PyList_Append(flags[i] == 1 ? failed : other, at) < 0) {
            Py_CLEAR(failed);
        }
        Py_XDECREF(at);
    }
    if (failed && other) {
        if (any)
            result = Py_BuildValue("(OOK)", failed, other, highest);
        else
            result = Py_BuildValue("(OOi)", failed, other, -1);
    }
    Py_XDECREF(failed);
    Py_XDECREF(other);
unbusy:
    self->busy = 0;
    PyMem_Free(flags);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&kinds);
    return result;
}

static PyMethodDef Gcm_methods[] = {
    {"seal_batch", (PyCFunction)Gcm_seal_batch, METH_VARARGS, seal_batch_doc},
    {"open_segments", (PyCFunction)Gcm_open_segments, METH_VARARGS, open_segments_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GcmType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "alf._gcm.Gcm",
    .tp_doc = PyDoc_STR("Gcm(key, iv): one direction's AES-256-GCM key and IV, for batches"),
    .tp_basicsize = sizeof(Gcm),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Gcm_init,
    .tp_dealloc = (destructor)Gcm_dealloc,
    .tp_methods = Gcm_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "alf._gcm", "AES-256-GCM over batches of datagrams (alf/seal.py)", -1, NULL,
};

PyMODINIT_FUNC PyInit__gcm(void) {
    if (PyType_Ready(&GcmType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&GcmType);
    if (PyModule_AddObject(m, "Gcm", (PyObject *)&GcmType) < 0) {
        Py_DECREF(&GcmType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
