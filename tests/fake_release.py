"""A tiny stand-in for the dataset's public release, and a local server for it.

`build_release` writes archives with the real names, folder structure and CSV columns
(FSDKaggle2019.meta.zip with the post-competition CSVs, a curated zip, the noisy set as a
split archive of two parts, a test zip) holding a handful of short WAVs. `serve` serves a
folder over HTTP on 127.0.0.1 with Range support, and can cut a file's first transfer
short to test resuming.

    python tests/fake_release.py DIR      # build into DIR and serve it until Ctrl-C
"""
from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import struct
import sys
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CLASSES_FILE = Path(__file__).resolve().parent.parent / "code" / "fat2019" / "data" / "fsd2019_classes.txt"
CLASSES = [c for c in CLASSES_FILE.read_text().split() if c]
COUNTS = {"curated": 5, "noisy": 4, "test": 4}
FOLDERS = {"curated": "FSDKaggle2019.audio_train_curated", "noisy": "FSDKaggle2019.audio_train_noisy",
           "test": "FSDKaggle2019.audio_test"}


def wav_bytes(seconds: float, seed: int, rate: int = 44100) -> bytes:
    """A 16-bit mono WAV of noise and a tone (noise keeps zip from shrinking it)."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (200 + 40 * seed) * t) + 0.05 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def clip_table() -> dict[str, list[tuple[str, str]]]:
    """(fname, labels) per set; some clips carry two labels (a quoted "A,B" field)."""
    table, k = {}, 0
    for name, n in COUNTS.items():
        rows = []
        for i in range(n):
            labels = CLASSES[k % 80] + ("," + CLASSES[(k + 7) % 80] if k % 3 == 0 else "")
            rows.append((f"{name[0]}{i:04x}ab.wav", labels))
            k += 1
        table[name] = rows
    return table


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def meta_csvs(table) -> dict[str, str]:
    """The three post-competition CSVs, in the columns FSDKaggle2019's README gives."""
    return {
        "train_curated_post_competition.csv": csv_text(
            ["fname", "labels", "freesound_id", "license"],
            [[f, l, 1000 + i, "CC0"] for i, (f, l) in enumerate(table["curated"])]),
        "train_noisy_post_competition.csv": csv_text(
            ["fname", "labels", "flickr_video_URL", "license"],
            [[f, l, f"http://www.flickr.com/videos/x/{i}/", "CC-BY"] for i, (f, l) in enumerate(table["noisy"])]),
        "test_post_competition.csv": csv_text(
            ["fname", "labels", "usage", "freesound_id", "license"],
            [[f, l, "Public" if i % 2 == 0 else "Private", 2000 + i, "CC-BY"]
             for i, (f, l) in enumerate(table["test"])]),
    }


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def split_zip(data: bytes, n_parts: int = 2) -> list[bytes]:
    """`data` (a single-file zip) as a split archive of `n_parts` parts, the way `zip -s`
    lays one out: a spanning signature first, the members' bytes cut into parts (a cut may
    fall inside a member), each central directory entry giving (part, offset in part), and
    the central directory and its end record in the last part."""
    eocd_at = data.rfind(b"PK\x05\x06")
    _, _, _, _, entries, cd_size, cd_offset, _ = struct.unpack_from("<4s4H2LH", data, eocd_at)
    body = b"PK\x07\x08" + data[:cd_offset]
    cut = [len(body) * k // n_parts for k in range(1, n_parts)]
    starts = [0] + cut
    parts = [body[a:b] for a, b in zip(starts, cut + [len(body)])]
    cd, i, out = data[cd_offset:cd_offset + cd_size], 0, b""
    for _ in range(entries):
        fields = list(struct.unpack_from("<4s6H3L5H2L", cd, i))
        tail_len = fields[10] + fields[11] + fields[12]
        absolute = fields[16] + 4
        disk = max(k for k, s in enumerate(starts) if s <= absolute)
        fields[13], fields[16] = disk, absolute - starts[disk]
        out += struct.pack("<4s6H3L5H2L", *fields) + cd[i + 46:i + 46 + tail_len]
        i += 46 + tail_len
    last = n_parts - 1
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", last, last, entries, entries, len(out), len(parts[-1]), 0)
    parts[-1] += out + eocd
    return parts


def build_release(folder: Path, drop_from_curated: str | None = None) -> list[dict]:
    """The fake release in `folder`; returns its file table (name, holds, md5, size)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table, files, seed = clip_table(), {}, 0
    audio = {}
    for name, rows in table.items():
        audio[name] = {}
        for f, _ in rows:
            audio[name][f] = wav_bytes(0.3 + 0.1 * (seed % 4), seed)
            seed += 1
    files["FSDKaggle2019.meta.zip"] = zip_bytes({f"FSDKaggle2019.meta/{n}": t.encode()
                                                 for n, t in meta_csvs(table).items()})
    files["FSDKaggle2019.audio_train_curated.zip"] = zip_bytes(
        {f"{FOLDERS['curated']}/{f}": b for f, b in audio["curated"].items() if f != drop_from_curated})
    noisy = split_zip(zip_bytes({f"{FOLDERS['noisy']}/{f}": b for f, b in audio["noisy"].items()}))
    files["FSDKaggle2019.audio_train_noisy.z01"], files["FSDKaggle2019.audio_train_noisy.zip"] = noisy
    files["FSDKaggle2019.audio_test.zip"] = zip_bytes({f"{FOLDERS['test']}/{f}": b for f, b in audio["test"].items()})
    holds = {"meta.zip": "meta", "curated.zip": "curated", "noisy.z01": "noisy", "noisy.zip": "noisy",
             "test.zip": "test"}
    rows = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        rows.append({"name": name, "holds": next(v for k, v in holds.items() if name.endswith(k)),
                     "md5": hashlib.md5(data).hexdigest(), "size": len(data)})
    return rows


def write_table(path: Path, rows: list[dict]) -> Path:
    Path(path).write_text(json.dumps(rows, indent=1))
    return Path(path)


class Server:
    """What the handler serves and what it saw: requests = [(method, name, Range header)];
    cut = {name: bytes}: the next GET of that name sends only that many bytes, then hangs up."""

    def __init__(self, folder: Path):
        self.folder, self.requests, self.cut = Path(folder), [], {}


def _handler(state: Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _file(self):
            name = self.path.split("?")[0].rsplit("/", 1)[-1]
            path = state.folder / name
            return name, (path if path.is_file() else None)

        def do_HEAD(self):
            name, path = self._file()
            state.requests.append(("HEAD", name, None))
            if path is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()

        def do_GET(self):
            name, path = self._file()
            rng = self.headers.get("Range")
            state.requests.append(("GET", name, rng))
            if path is None:
                self.send_error(404)
                return
            data = path.read_bytes()
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            if start >= len(data) and rng:
                self.send_error(416)
                return
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            if name in state.cut:
                body = body[:state.cut.pop(name)]
                self.close_connection = True
            self.wfile.write(body)
            self.wfile.flush()

    return Handler


@contextmanager
def serve(folder: Path):
    """(base URL, Server) for `folder`, on a free port of 127.0.0.1, for the with-block."""
    state = Server(folder)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/files", state
    finally:
        httpd.shutdown()
        httpd.server_close()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    write_table(out / "files.json", build_release(out / "release"))
    with serve(out / "release") as (url, _):
        print(f"serving {out / 'release'} at {url}; file table {out / 'files.json'}", flush=True)
        threading.Event().wait()
