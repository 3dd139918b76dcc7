"""Imports under abuse: odd encodings, binary and huge files, a bad byte deep in a file, SIGKILL mid-import."""

from __future__ import annotations

import codecs
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from newsletter import database, roster, subscriptions
from newsletter.cli import main
from newsletter.errors import ImportFileError
from newsletter.listfile import MAX_LINE_BYTES
from newsletter.models import Subscriber
from newsletter.settings import Settings

CHINESE_LIST = "email,name,city\n" + "".join(
    f"reader{i}@example.cn,张伟{i}号,北京市朝阳区建国路{i}号\n" for i in range(20)
)


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Subscriber)) or 0


def write_bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "list.csv"
    path.write_bytes(data)
    return path


def refused(session: Session, path: Path, encoding: str | None = None) -> str:
    """The one-line error an import of `path` ends with; nothing is imported."""
    with pytest.raises(ImportFileError) as error:
        roster.import_csv(session, path, encoding=encoding)
    session.rollback()  # what the caller's transaction does with an error: the rows read before it go too
    assert count(session) == 0
    message = str(error.value)
    assert "\n" not in message
    return message


def test_nul_bytes_are_refused_with_their_line(session: Session, tmp_path: Path) -> None:
    data = b"email\nok@example.org\nbad\x00@example.org\n"
    message = refused(session, write_bytes(tmp_path, data))
    assert f"NUL byte at line 3, byte {data.index(0)}:" in message


def test_a_50_mb_file_of_one_line_is_refused_without_reading_it_whole(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    with path.open("wb") as out:
        out.write(b"email\n")
        for _ in range(50):
            out.write(b"x" * 1_048_576)
    assert "line 2 is longer than" in refused(session, path)


def test_a_50_mb_binary_file_is_refused(session: Session, tmp_path: Path) -> None:
    path = write_bytes(tmp_path, b"email\n" + os.urandom(50 * 1_048_576))
    assert "not UTF-8" in refused(session, path)


def test_a_workbook_saved_instead_of_csv_is_named(session: Session, tmp_path: Path) -> None:
    path = write_bytes(tmp_path, b"PK\x03\x04" + os.urandom(2000))
    assert "spreadsheet workbook, not CSV" in refused(session, path)


def test_gbk_without_encoding_is_one_clear_line_when_unsure(session: Session, tmp_path: Path) -> None:
    data = "email,name\nok@example.org,Ok\nzhang@example.cn,张三\n".encode("gbk")
    message = refused(session, write_bytes(tmp_path, data))
    assert f"is not UTF-8 (line 3, byte {data.index(0xD5)}: 0xd5)" in message
    assert "--encoding" in message


def test_gbk_without_encoding_through_the_cli_is_one_line_and_exit_1(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    path = write_bytes(tmp_path, "email,name\nzhang@example.cn,张三\n".encode("gbk"))
    env = {"NEWSLETTER_DATABASE_URL": settings.database_url, "NEWSLETTER_SECRET_KEY": settings.secret_key}
    result = CliRunner().invoke(main, ["subscribers", "import", str(path)], env=env)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "--encoding" in result.output


def test_gbk_with_encoding_keeps_the_names(session: Session, tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "email,name\nzhang@example.cn,张三\n".encode("gbk"))
    report = roster.import_csv(session, path, encoding="gbk")
    assert (report.added, report.encoding) == (1, "gbk (given)")
    assert subscriptions.get_subscriber(session, "zhang@example.cn").name == "张三"


def test_a_chinese_list_in_gb18030_is_detected(session: Session, tmp_path: Path) -> None:
    report = roster.import_csv(session, write_bytes(tmp_path, CHINESE_LIST.encode("gb18030")))
    assert (report.added, report.encoding) == (20, "GB18030 (detected)")
    reader = subscriptions.get_subscriber(session, "reader7@example.cn")
    assert (reader.name, reader.attributes) == ("张伟7号", {"city": "北京市朝阳区建国路7号"})


def test_utf16_as_excel_writes_it(session: Session, tmp_path: Path) -> None:
    # Excel's "Unicode Text": UTF-16 LE with a byte order mark, tab-separated, CRLF line ends.
    text = CHINESE_LIST.replace(",", "\t").replace("\n", "\r\n")
    report = roster.import_csv(session, write_bytes(tmp_path, codecs.BOM_UTF16_LE + text.encode("utf-16-le")))
    assert (report.added, report.encoding, report.rejected) == (20, "UTF-16 (byte order mark)", [])
    assert subscriptions.get_subscriber(session, "reader3@example.cn").name == "张伟3号"


def test_utf8_with_a_byte_order_mark_and_semicolons(session: Session, tmp_path: Path) -> None:
    data = codecs.BOM_UTF8 + "Email;Name\nann@example.org;Ann Müller\n".encode()
    report = roster.import_csv(session, write_bytes(tmp_path, data))
    assert (report.added, report.encoding) == (1, "UTF-8 (byte order mark)")
    assert subscriptions.get_subscriber(session, "ann@example.org").name == "Ann Müller"


def test_lines_ended_by_cr_alone_as_excel_for_mac_writes_them(session: Session, tmp_path: Path) -> None:
    report = roster.import_csv(session, write_bytes(tmp_path, "email,name\ra@example.org,张三\rbad\r".encode()))
    assert (report.added, [(r.line, r.email) for r in report.rejected]) == (1, [(3, "bad")])
    assert subscriptions.get_subscriber(session, "a@example.org").name == "张三"


def test_a_bad_byte_in_a_file_of_cr_lines_is_named_at_its_line(session: Session, tmp_path: Path) -> None:
    assert "(line 3, byte 14: 0xff)" in refused(session, write_bytes(tmp_path, b"email\ra@b.org\r\xff\r"))


def test_an_unknown_encoding_name_is_one_clear_error(session: Session, tmp_path: Path) -> None:
    path = write_bytes(tmp_path, b"email\na@example.org\n")
    assert "unknown encoding 'klingon'" in refused(session, path, encoding="klingon")


def test_a_bad_byte_deep_in_a_file_is_named_at_its_line_and_byte(session: Session, tmp_path: Path) -> None:
    # Far past the head that encoding detection reads, and past the first chunks inserted.
    lines = [b"email,name\n"] + [f"reader{i}@example.org,{'读者' * 20}{i}\n".encode() for i in range(12_000)]
    lines[10_000] = b"bad@example.org,\xff\n"
    offset = sum(len(line) for line in lines[:10_000]) + len(b"bad@example.org,")
    assert offset > 1_048_576
    message = refused(session, write_bytes(tmp_path, b"".join(lines)))
    assert f"is not UTF-8 at line 10001, byte {offset:,} (0xff)" in message


def test_a_duplicate_far_from_its_first_line_names_that_line(session: Session, tmp_path: Path) -> None:
    rows = "".join(f"r{i}@example.org\n" for i in range(roster.VALIDATION_CHUNK_ROWS * 2))
    report = roster.import_csv(session, write_bytes(tmp_path, f"email\n{rows}R0@EXAMPLE.org\n".encode()))
    assert [(r.line, r.reason) for r in report.rejected] == [
        (roster.VALIDATION_CHUNK_ROWS * 2 + 2, "duplicate of line 2")
    ]


def test_rejections_are_counted_past_what_is_kept(session: Session, tmp_path: Path) -> None:
    rows = "".join(f"not-an-address-{i}\n" for i in range(roster.MAX_REPORTED_REJECTIONS + 500))
    report = roster.import_csv(session, write_bytes(tmp_path, f"email\nok@example.org\n{rows}".encode()))
    assert (report.added, report.rejected_count) == (1, roster.MAX_REPORTED_REJECTIONS + 500)
    assert len(report.rejected) == roster.MAX_REPORTED_REJECTIONS and report.rejected[0].line == 3


def test_a_long_line_limit_leaves_room_for_any_real_row() -> None:
    assert MAX_LINE_BYTES >= 64 * 1024


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running or sleeping: a zombie waiting for init to reap it counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_sigkill_mid_import_leaves_no_validator_running_and_imports_nothing(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    rows = roster.PARALLEL_VALIDATION_MIN_ROWS * 10
    path = tmp_path / "list.csv"
    path.write_text("email\n" + "".join(f"reader{i}@example{i % 7}.org\n" for i in range(rows)), encoding="utf-8")
    env = {**os.environ, "NEWSLETTER_DATABASE_URL": settings.database_url, "NEWSLETTER_SECRET_KEY": "k" * 32}
    code = "import sys\nfrom newsletter.cli import main\nmain(sys.argv[1:])"
    process = subprocess.Popen([sys.executable, "-c", code, "subscribers", "import", str(path)], env=env)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not (children := children_of(process.pid)) and time.monotonic() < deadline:
            assert process.poll() is None, "the import ended before its validators started"
            time.sleep(0.05)
        assert children, "no validation process started"
        time.sleep(0.3)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        deadline = time.monotonic() + 10
        while any(alive(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [child for child in children if alive(child)]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for child in children:  # what a failure left behind
            if alive(child):
                os.kill(child, signal.SIGKILL)
    with database.transaction(engine) as session:
        assert count(session) == 0


@pytest.mark.postgres
def test_a_streamed_import_on_postgres_is_one_transaction(postgres_engine: Engine, tmp_path: Path) -> None:
    rows = "".join(f"r{i}@example.org\n" for i in range(roster.VALIDATION_CHUNK_ROWS * 2))
    path = write_bytes(tmp_path, f"email\n{rows}R0@EXAMPLE.org\nbroken@\n".encode())
    with database.transaction(postgres_engine) as session:
        report = roster.import_csv(session, path)
    assert (report.added, [r.line for r in report.rejected]) == (roster.VALIDATION_CHUNK_ROWS * 2, [10_002, 10_003])
    with database.transaction(postgres_engine) as session:  # the next import on the same connection works too
        again = roster.import_csv(session, path)
        assert (again.added, again.already_present) == (0, roster.VALIDATION_CHUNK_ROWS * 2)
    lines = b"".join(f"s{i}@example.org,{'x' * 100}\n".encode() for i in range(12_000))
    bad = write_bytes(tmp_path, b"email,name\n" + lines + b"\xff,\n")  # past the head detection reads
    with pytest.raises(ImportFileError), database.transaction(postgres_engine) as session:
        roster.import_csv(session, bad)
    with database.transaction(postgres_engine) as session:
        assert count(session) == roster.VALIDATION_CHUNK_ROWS * 2
