_Buf = bytes | bytearray | memoryview

class Gcm:
    def __init__(self, key: bytes, iv: bytes) -> None: ...
    def seal_batch(
        self, out: _Buf, stride: int, heads: list[_Buf], bodies: list[_Buf], pn: int, epoch_bits: int
    ) -> list[int]: ...
    def open_segments(
        self, buf: _Buf, segment: int, head: int, epoch_bits: int, epoch: int, kinds: bytes
    ) -> tuple[list[int], list[int], int]: ...
