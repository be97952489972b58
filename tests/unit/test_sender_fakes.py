"""The sender's unit tests stand fakes in for the typed door (tests/helpers/fake_api.py stands in
for runhub_loader/db/api.py), the SMTP session and the recorder (tests/helpers/sender_fakes.py):
none may drift from what it stands in for."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from helpers.fake_api import FakeApi
from helpers.sender_fakes import FakeRecorder, FakeSmtp
from runhub_loader.db.api import Api
from runhub_loader.mail import daemon
from runhub_loader.mail.recorder import Recorder
from runhub_loader.mail.smtp import SmtpConnection

MAIL = Path(daemon.__file__).parent
PARTS = ["loop.py", "catch_up.py", "local_queue.py", "relay_gate.py", "heartbeat.py", "workers.py"]


def public_methods(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(function) for name, function in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


@pytest.mark.parametrize("fake, real", [(FakeApi, Api), (FakeSmtp, SmtpConnection)], ids=["api", "smtp"])
def test_a_fake_has_only_its_originals_methods_each_with_its_signature(fake, real):
    faked, original = public_methods(fake), public_methods(real)
    assert faked and set(faked) <= set(original), set(faked) - set(original)
    assert faked == {name: original[name] for name in faked}


def test_the_fake_recorder_records_as_the_recorder_does():
    assert inspect.signature(FakeRecorder.record) == inspect.signature(Recorder.record)


def test_the_fake_api_has_every_method_the_senders_parts_call():
    called = {name for part in PARTS for name in re.findall(r"\bapi\.(\w+)\(", (MAIL / part).read_text())}
    assert {"claim_messages", "release_messages", "defer_messages", "report_relay"} <= called  # the scan sees them
    assert called <= set(public_methods(FakeApi)), called - set(public_methods(FakeApi))
