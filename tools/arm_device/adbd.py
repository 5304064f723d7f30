"""A small device-side adb daemon for the emulated aarch64 device: the real `adb` client connects to it over TCP.

It speaks the adb transport protocol (CNXN, OPEN, OKAY, WRTE, CLSE; no AUTH, which the client allows for TCP
devices) and serves `shell:` / `shell,v2:` (with exit codes) and `sync:` (STAT, SEND, RECV, LIST, QUIT).
Standard library only: it runs with the device root's python3. Listens on 127.0.0.1 only. Test tooling, not product.

    python3 adbd.py --port 5555
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import stat
import struct
import subprocess
import threading

A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_AUTH = (
    int.from_bytes(name, "little") for name in (b"CNXN", b"OPEN", b"OKAY", b"CLSE", b"WRTE", b"AUTH"))
VERSION = 0x01000001  # skips payload checksums
MAX_PAYLOAD = 256 * 1024
BANNER = (b"device::ro.product.name=edgekit_arm64;ro.product.model=edgekit emulated arm64;"
          b"ro.product.device=edgekit_arm64;features=shell_v2,cmd\0")
SHELL_PATH = "/system/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.max_payload = MAX_PAYLOAD

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        header = struct.pack("<6I", command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF)
        with self.send_lock:
            self.sock.sendall(header + data)

    def recv_exact(self, n: int) -> bytes:
        chunks = b""
        while len(chunks) < n:
            chunk = self.sock.recv(n - len(chunks))
            if not chunk:
                raise ConnectionError
            chunks += chunk
        return chunks

    def serve(self) -> None:
        try:
            while True:
                command, arg0, arg1, length, _, _ = struct.unpack("<6I", self.recv_exact(24))
                data = self.recv_exact(length) if length else b""
                self.dispatch(command, arg0, arg1, data)
        except (ConnectionError, OSError):
            pass
        finally:
            for stream in list(self.streams.values()):
                stream.inbox.put(None)
            self.sock.close()

    def dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self.max_payload = min(arg1, MAX_PAYLOAD)
            self.send(A_CNXN, VERSION, MAX_PAYLOAD, BANNER)
        elif command == A_OPEN:
            local = self.next_id
            self.next_id += 1
            service = data.rstrip(b"\0").decode()
            stream = Stream(self, local, arg0, service)
            self.streams[local] = stream
            self.send(A_OKAY, local, arg0)
            threading.Thread(target=stream.run, daemon=True).start()
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream:
                self.send(A_OKAY, arg1, arg0)
                stream.inbox.put(data)
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream:
                stream.acked.set()
        elif command == A_CLSE:
            stream = self.streams.pop(arg1, None)
            if stream:
                stream.inbox.put(None)
                stream.acked.set()


class Stream:
    def __init__(self, conn: Connection, local: int, remote: int, service: str) -> None:
        self.conn, self.local, self.remote, self.service = conn, local, remote, service
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.acked = threading.Event()
        self.acked.set()
        self.buffer = b""
        self.closed = False

    # -- writing: one WRTE in flight at a time, as the protocol asks
    def write(self, data: bytes) -> None:
        for start in range(0, len(data), self.conn.max_payload):
            if not self.acked.wait(60) or self.closed:
                raise ConnectionError
            self.acked.clear()
            self.conn.send(A_WRTE, self.local, self.remote, data[start:start + self.conn.max_payload])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.streams.pop(self.local, None)
            self.conn.send(A_CLSE, self.local, self.remote)

    # -- reading: exact byte counts across WRTE boundaries
    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.inbox.get()
            if chunk is None:
                raise ConnectionError
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def run(self) -> None:
        try:
            if self.service.startswith("shell"):
                self.shell()
            elif self.service.startswith("sync:"):
                self.sync()
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()

    def shell(self) -> None:
        head, _, command = self.service.partition(":")
        v2 = "v2" in head.split(",")
        env = dict(os.environ, PATH=SHELL_PATH, HOME="/data/local/tmp")
        argv = ["/bin/sh", "-c", command] if command else ["/bin/sh"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd="/", env=env)

        def pump(pipe, packet_id: int) -> None:  # noqa: ANN001
            for chunk in iter(lambda: os.read(pipe.fileno(), 65536), b""):
                self.write(struct.pack("<BI", packet_id, len(chunk)) + chunk if v2 else chunk)

        threads = [threading.Thread(target=pump, args=(proc.stdout, 1)),
                   threading.Thread(target=pump, args=(proc.stderr, 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        code = proc.wait()
        if v2:
            self.write(struct.pack("<BI", 3, 1) + bytes([code & 0xFF]))

    def sync(self) -> None:
        while True:
            request, length = struct.unpack("<4sI", self.read(8))
            if request == b"QUIT":
                return
            path = self.read(length).decode()
            if request == b"STAT":
                try:
                    st = os.stat(path)
                    self.write(struct.pack("<4sIII", b"STAT", st.st_mode, st.st_size, int(st.st_mtime)))
                except OSError:
                    self.write(struct.pack("<4sIII", b"STAT", 0, 0, 0))
            elif request == b"LIST":
                for name in sorted(os.listdir(path)) if os.path.isdir(path) else []:
                    st = os.lstat(os.path.join(path, name))
                    encoded = name.encode()
                    self.write(struct.pack("<4sIIII", b"DENT", st.st_mode, st.st_size, int(st.st_mtime),
                                           len(encoded)) + encoded)
                self.write(struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0))
            elif request == b"SEND":
                self.receive_file(path)
            elif request == b"RECV":
                self.send_file(path)
            else:
                self.fail(f"unsupported sync request {request!r}")
                return

    def fail(self, message: str) -> None:
        data = message.encode()
        self.write(struct.pack("<4sI", b"FAIL", len(data)) + data)

    def receive_file(self, spec: str) -> None:
        path, _, mode = spec.rpartition(",")
        tmp = f"{path}.adbd-tmp"
        error = None
        try:
            out = open(tmp, "wb")  # noqa: SIM115 - closed below, after the DONE packet
        except OSError as exc:
            out, error = None, str(exc)
        while True:
            kind, length = struct.unpack("<4sI", self.read(8))
            if kind == b"DATA":
                chunk = self.read(length)
                if out:
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        error = str(exc)
            elif kind == b"DONE":
                break
            else:
                error = f"unexpected {kind!r} during SEND"
                break
        if out:
            out.close()
            if error is None:
                os.chmod(tmp, stat.S_IMODE(int(mode or "0644")) or 0o644)
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
        if error:
            self.fail(error)
        else:
            self.write(struct.pack("<4sI", b"OKAY", 0))

    def send_file(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(64 * 1024), b""):
                    self.write(struct.pack("<4sI", b"DATA", len(chunk)) + chunk)
        except OSError as exc:
            self.fail(str(exc))
            return
        self.write(struct.pack("<4sI", b"DONE", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", args.port))
    server.listen(8)
    while True:
        sock, _ = server.accept()
        threading.Thread(target=Connection(sock).serve, daemon=True).start()


if __name__ == "__main__":
    main()
