"""Only the last process using a shared network removes it, and a newcomer waits for that
removal. Each NetworkHold opens its own file description, as another process would."""

from __future__ import annotations

import threading
import time

from emulator.network_holds import NetworkHold


def test_the_last_holder_out_removes_the_network_and_no_other(tmp_path):
    with NetworkHold("net", tmp_path) as first, NetworkHold("net", tmp_path) as second:
        assert first.last_out() is False, "the second still uses it"
        assert second.last_out() is True


def test_holds_of_different_networks_do_not_meet(tmp_path):
    with NetworkHold("training", tmp_path), NetworkHold("serving", tmp_path) as serving:
        assert serving.last_out() is True


def test_a_newcomer_waits_until_the_last_one_out_has_removed_the_network(tmp_path):
    events: list[str] = []
    with NetworkHold("net", tmp_path) as leaving:
        assert leaving.last_out()

        def newcomer() -> None:
            with NetworkHold("net", tmp_path):
                events.append("newcomer holds it")

        thread = threading.Thread(target=newcomer)
        thread.start()
        time.sleep(0.2)
        events.append("network removed")
    thread.join(5)
    assert events == ["network removed", "newcomer holds it"]
