"""Reading the dataset's archives, the split noisy archive included, in pure Python.

A split ("spanned") zip, as `zip -s` writes it (FSDKaggle2019.audio_train_noisy.z01 ...
.z06 + .zip), is the bytes of one archive cut into parts, except that its central
directory gives every member's position as (part number, offset within that part).
Python's zipfile reads only single-file archives, so `open_split_zip` shows it one: a
read-only view of the parts back to back, followed by a rewritten central directory whose
offsets are counted from the start of the first part (in ZIP64 form where they pass
4 GiB). Nothing is copied, so joining costs no disk; zipfile then checks every member's
CRC-32 as it is read.
"""
from __future__ import annotations

import bisect
import io
import shutil
import struct
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from fat2019.data.download import DataError, check_free_space

EOCD = struct.Struct("<4s4H2LH")                 # end of central directory
EOCD_SIG = b"PK\x05\x06"
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
ZIP64_EOCD_SIG = b"PK\x06\x06"
CENTRAL = struct.Struct("<4s6H3L5H2L")           # one central directory entry
CENTRAL_SIG = b"PK\x01\x02"
ZIP64_EXTRA = 0x0001
U32, U16 = 0xFFFFFFFF, 0xFFFF


class JoinedParts(io.RawIOBase):
    """Read-only file: segments of files on disk, then bytes in memory, back to back."""

    def __init__(self, segments: list[tuple[Path, int, int]], tail: bytes):
        super().__init__()
        self.files = [open(path, "rb") for path, _, _ in segments]
        self.pieces = [(f, start, length) for f, (_, start, length) in zip(self.files, segments)]
        self.pieces.append((io.BytesIO(tail), 0, len(tail)))
        self.starts, pos = [], 0
        for _, _, length in self.pieces:
            self.starts.append(pos)
            pos += length
        self.size, self.pos = pos, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: self.size}[whence] + offset
        return self.pos

    def readinto(self, buffer) -> int:
        if self.pos >= self.size:
            return 0
        i = bisect.bisect_right(self.starts, self.pos) - 1
        source, start, length = self.pieces[i]
        within = self.pos - self.starts[i]
        n = min(len(buffer), length - within)
        source.seek(start + within)
        data = source.read(n)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        for f in self.files:
            f.close()
        super().close()


def _end_records(last: Path) -> tuple[dict, int]:
    """The end-of-central-directory fields of a (split) archive's last part, ZIP64 values
    filled in, and where in the last part those end records begin."""
    size = last.stat().st_size
    with open(last, "rb") as f:
        f.seek(max(0, size - (EOCD.size + U16)))
        tail_start = f.tell()
        tail = f.read()
    at = tail.rfind(EOCD_SIG)
    if at < 0 or at + EOCD.size > len(tail):
        raise DataError(f"{last}: not a zip archive (no end of central directory)")
    _, disk, cd_disk, _, entries, cd_size, cd_offset, _ = EOCD.unpack_from(tail, at)
    end = dict(disk=disk, cd_disk=cd_disk, entries=entries, cd_size=cd_size, cd_offset=cd_offset)
    records_start = tail_start + at
    loc = at - ZIP64_LOCATOR.size
    if loc >= 0 and tail[loc:loc + 4] == ZIP64_LOCATOR_SIG:
        _, z64_disk, z64_offset, _ = ZIP64_LOCATOR.unpack_from(tail, loc)
        with open(last, "rb") as f:   # in a split archive it sits in the last part too
            f.seek(z64_offset if z64_disk == disk else size)
            raw = f.read(ZIP64_EOCD.size)
        if len(raw) != ZIP64_EOCD.size or raw[:4] != ZIP64_EOCD_SIG:
            raise DataError(f"{last}: damaged ZIP64 end record")
        (_, _, _, _, disk, cd_disk, _, entries, cd_size, cd_offset) = ZIP64_EOCD.unpack(raw)
        end = dict(disk=disk, cd_disk=cd_disk, entries=entries, cd_size=cd_size, cd_offset=cd_offset)
        records_start = z64_offset
    return end, records_start


def _zip64_values(extra: bytes) -> tuple[list[int], bytes]:
    """(the ZIP64 extra field's 8-byte values, the other extra fields)."""
    values, others, i = [], b"", 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack_from("<2H", extra, i)
        block = extra[i:i + 4 + n]
        if tag == ZIP64_EXTRA:
            body = block[4:]
            values = [struct.unpack_from("<Q", body, j)[0] for j in range(0, len(body) - 7, 8)]
        else:
            others += block
        i += 4 + n
    return values, others


def rewrite_central_directory(cd: bytes, part_starts: list[int], cd_offset: int, n_entries: int,
                              force_zip64: bool = False) -> bytes:
    """A single-archive central directory and end records for the entries in `cd`, every
    (part, offset) turned into an offset from the start of the joined parts.
    `force_zip64` writes the zip64 records even where sizes fit in 32 bits: the real noisy
    archive needs them (24 GB), and the flag is how the tests reach that path with small
    files."""
    out, i = bytearray(), 0
    for _ in range(n_entries):
        if cd[i:i + 4] != CENTRAL_SIG:
            raise DataError("damaged central directory (bad entry signature)")
        fields = list(CENTRAL.unpack_from(cd, i))
        name_len, extra_len, comment_len = fields[10:13]
        body = i + CENTRAL.size
        name = cd[body:body + name_len]
        extra = cd[body + name_len:body + name_len + extra_len]
        comment = cd[body + name_len + extra_len:body + name_len + extra_len + comment_len]
        i = body + name_len + extra_len + comment_len
        values, others = _zip64_values(extra)
        usize, csize, offset, disk = fields[9], fields[8], fields[16], fields[13]
        if usize == U32:
            usize = values.pop(0)
        if csize == U32:
            csize = values.pop(0)
        if offset == U32:
            offset = values.pop(0)
        if disk == U16:
            disk = values.pop(0)
        if disk >= len(part_starts):
            raise DataError(f"member {name.decode('utf-8', 'replace')!r} lies in part {disk + 1}, "
                            f"but there are only {len(part_starts)} parts")
        offset += part_starts[disk]
        big = [v for v in (usize, csize, offset) if v >= U32 or force_zip64]
        z64 = b"".join(struct.pack("<Q", v) for v in (usize, csize, offset) if v >= U32 or force_zip64)
        fields[9] = U32 if usize >= U32 or force_zip64 else usize
        fields[8] = U32 if csize >= U32 or force_zip64 else csize
        fields[16] = U32 if offset >= U32 or force_zip64 else offset
        fields[13] = 0
        new_extra = (struct.pack("<2H", ZIP64_EXTRA, len(z64)) + z64 if big else b"") + others
        fields[11] = len(new_extra)
        out += CENTRAL.pack(*fields) + name + new_extra + comment
    cd_size = len(out)
    if force_zip64 or n_entries >= U16 or cd_offset >= U32 or cd_size >= U32:
        z64_at = cd_offset + cd_size
        out += ZIP64_EOCD.pack(ZIP64_EOCD_SIG, ZIP64_EOCD.size - 12, 45, 45, 0, 0, n_entries, n_entries,
                               cd_size, cd_offset)
        out += ZIP64_LOCATOR.pack(ZIP64_LOCATOR_SIG, 0, z64_at, 1)
        out += EOCD.pack(EOCD_SIG, 0, 0, U16, U16, U32, U32, 0)
    else:
        out += EOCD.pack(EOCD_SIG, 0, 0, n_entries, n_entries, cd_size, cd_offset, 0)
    return bytes(out)


def open_split_zip(parts: list[Path], force_zip64: bool = False) -> zipfile.ZipFile:
    """The split archive whose parts are `parts` (.z01, .z02, ..., .zip last), as one
    ZipFile. Errors name the part at fault."""
    parts = [Path(p) for p in parts]
    for p in parts:
        if not p.is_file():
            raise DataError(f"{p}: part of the split archive not found")
    end, records_start = _end_records(parts[-1])
    if end["disk"] + 1 != len(parts):
        raise DataError(f"{parts[-1]}: the archive has {end['disk'] + 1} parts, found {len(parts)} "
                        f"({', '.join(p.name for p in parts)})")
    sizes = [p.stat().st_size for p in parts]
    starts = [sum(sizes[:k]) for k in range(len(parts))]
    cd_at = starts[end["cd_disk"]] + end["cd_offset"]
    raw = JoinedParts([(p, 0, s) for p, s in zip(parts[:-1], sizes[:-1])] + [(parts[-1], 0, records_start)], b"")
    try:
        raw.seek(cd_at)
        cd = raw.read(end["cd_size"]) if end["cd_size"] else b""
        while len(cd) < end["cd_size"]:
            more = raw.read(end["cd_size"] - len(cd))
            if not more:
                raise DataError(f"{parts[-1]}: the central directory is cut short (a part is truncated?)")
            cd += more
    finally:
        raw.close()
    tail = rewrite_central_directory(cd, starts, cd_at, end["entries"], force_zip64)
    data, left = [], cd_at   # the members' bytes: everything before the old central directory
    for p, s in zip(parts, sizes):
        if min(s, left):
            data.append((p, 0, min(s, left)))
        left -= min(s, left)
    view = io.BufferedReader(JoinedParts(data, tail), buffer_size=1 << 20)
    try:
        return zipfile.ZipFile(view)
    except zipfile.BadZipFile as e:
        view.close()
        raise DataError(f"{parts[-1]}: cannot read the joined split archive ({e})") from None


def open_archive(parts: list[Path]) -> zipfile.ZipFile:
    """One archive (a single file) or a split one (several parts, the .zip last)."""
    if len(parts) > 1:
        return open_split_zip(parts)
    try:
        return zipfile.ZipFile(parts[0])
    except FileNotFoundError:
        raise DataError(f"{parts[0]}: archive not found") from None
    except zipfile.BadZipFile as e:
        raise DataError(f"{parts[0]}: not a readable zip archive ({e}); delete it and rerun to fetch it again") \
            from None


def members_by_name(archive: zipfile.ZipFile, suffix: str) -> dict[str, zipfile.ZipInfo]:
    """Members ending in `suffix`, by their file name without the folder (the Zenodo
    archives hold FSDKaggle2019.audio_train_curated/<fname>, Kaggle's <fname>)."""
    found = {}
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if info.is_dir() or "__MACOSX" in path.parts or path.name.startswith("."):
            continue
        if path.name.lower().endswith(suffix):
            found[path.name] = info
    return found


def read_member_text(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> str:
    try:
        return archive.read(info).decode("utf-8-sig")
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: {info.filename}: cannot read it ({e})") from None


def extract_clips(archive: zipfile.ZipFile, where: str, fnames: list[str], staging: Path, csv_name: str) -> None:
    """Every clip of `fnames` from the archive into `staging` (flat). Before anything is
    written, the archive must hold all of them and the disk must have room; a damaged
    member (CRC mismatch, truncated part) stops it with the member named. The caller
    removes `staging` on failure."""
    members = members_by_name(archive, ".wav")
    missing = [f for f in fnames if f not in members]
    if missing:
        raise DataError(f"{where}: {len(missing)} clip(s) that {csv_name} lists are not in the archive, e.g. "
                        f"{missing[:5]} (a truncated or wrong archive? delete it and rerun)")
    check_free_space(staging, sum(members[f].file_size for f in fnames), f"unpacking {where}")
    staging.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm
    # a bar only in a terminal: in a log file its redraws would be blank lines
    for fname in tqdm(fnames, desc=f"unpack {Path(where).name}", unit="clip", leave=False,
                      disable=not sys.stderr.isatty()):
        try:
            with archive.open(members[fname]) as src, open(staging / fname, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise DataError(f"{where}: member {members[fname].filename} is damaged ({e}); delete the archive "
                            f"and rerun to fetch it again") from None
