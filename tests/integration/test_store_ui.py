"""The trace store end to end: openai SDK traffic through the real gateway, /api/v1 over HTTP,
and /ui in a real Chromium (sign-in, log, model filter, trace page, dashboard, visibility)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Proc, provider, start_gateway
from tests.integration.store_browser import browser, screenshot, wait_for  # noqa: F401

ALICE = "sk-alice-store-test-0123456789"
BOB = "sk-bob-store-test-9876543210"
CAROL = "sk-carol-store-test-5555555555"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def gw(mock: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    config = {
        "providers": [provider("mock", mock.url, ["gpt-4o", "gpt-4o-mini", "error-400"])],
        "auth": {
            "api_keys": [
                {"subject": "user:alice", "teams": ["platform"], "key_sha256": sha(ALICE)},
                {"subject": "user:bob", "teams": ["ml"], "key_sha256": sha(BOB)},
                {"subject": "user:carol", "teams": ["ml"], "key_sha256": sha(CAROL)},
            ]
        },
        "ui": {"admins": ["team:platform"]},
        "tracing": {"flush_interval_ms": 50},
    }
    proc = start_gateway(config, tmp_path_factory.mktemp("store-ui"))
    yield proc
    proc.stop()


def client(gw: Proc, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def api(gw: Proc, path: str, key: str | None = ALICE, **params: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(gw.url + path, params=params, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def traffic(gw: Proc) -> dict[str, Any]:
    """Requests as alice and bob; returns the usage the upstream reported, per caller."""
    usage = {"alice": 0, "bob": 0}
    a = client(gw, ALICE)
    history = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },  # fmt: skip
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18, "sky": "clear"}'},
    ]
    for i in range(3):
        r = a.chat.completions.create(
            model="mock/gpt-4o", messages=[{"role": "user", "content": f"alice question {i}"}]
        )
        usage["alice"] += r.usage.prompt_tokens + r.usage.completion_tokens
    r = a.chat.completions.create(model="mock/gpt-4o-mini", messages=history)
    usage["alice"] += r.usage.prompt_tokens + r.usage.completion_tokens
    stream = a.chat.completions.create(
        model="mock/gpt-4o-mini",
        messages=[{"role": "user", "content": "stream a haiku"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage["alice"] += chunk.usage.prompt_tokens + chunk.usage.completion_tokens
    b = client(gw, BOB)
    for i in range(2):
        r = b.chat.completions.create(
            model="mock/gpt-4o", messages=[{"role": "user", "content": f"bob asks {i}"}]
        )
        usage["bob"] += r.usage.prompt_tokens + r.usage.completion_tokens
    with pytest.raises(openai.BadRequestError):
        b.chat.completions.create(model="mock/error-400", messages=[{"role": "user", "content": "fail"}])
    wait_for(lambda: len(api(gw, "/api/v1/traces").json()["data"]) == 8, what="8 stored traces")
    return usage


# --- API ------------------------------------------------------------------------------------------


def test_api_lists_filters_and_pages(gw: Proc, traffic: dict[str, Any]) -> None:
    rows = api(gw, "/api/v1/traces").json()["data"]
    assert [r["subject"] for r in rows[:3]] == ["user:bob"] * 3  # newest first
    assert rows[0]["status"] == 400 and rows[0]["model"] == "mock/error-400"
    mini = api(gw, "/api/v1/traces", model="mock/gpt-4o-mini").json()["data"]
    assert len(mini) == 2 and {r["target"] for r in mini} == {"mock/gpt-4o-mini"}
    assert any(r["ttft_ms"] is not None for r in mini)
    assert len(api(gw, "/api/v1/traces", team="ml").json()["data"]) == 3
    assert len(api(gw, "/api/v1/traces", status="4xx").json()["data"]) == 1
    assert [r["preview"] for r in api(gw, "/api/v1/traces", q="haiku").json()["data"]] == ["stream a haiku"]
    page = api(gw, "/api/v1/traces", limit=5).json()
    rest = api(gw, "/api/v1/traces", limit=5, cursor=page["next_cursor"]).json()
    assert len(page["data"]) == 5 and len(rest["data"]) == 3 and rest["next_cursor"] is None


def test_api_bad_parameters_name_themselves(gw: Proc, traffic: dict[str, Any]) -> None:
    for params, name in (
        ({"colour": "red"}, "colour"),
        ({"limit": "-1"}, "limit"),
        ({"since": "soon"}, "since"),
    ):
        r = api(gw, "/api/v1/traces", **params)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == name
    assert api(gw, "/api/v1/stats", group_by="colour").json()["error"]["param"] == "group_by"
    assert api(gw, "/api/v1/traces/not-a-trace").status_code == 400
    assert api(gw, "/api/v1/traces/" + "0" * 32).status_code == 404
    assert api(gw, "/api/v1/nothing").status_code == 404


def test_api_needs_credentials_and_scopes_non_admins(gw: Proc, traffic: dict[str, Any]) -> None:
    assert api(gw, "/api/v1/traces", key=None).status_code == 401
    assert api(gw, "/api/v1/traces", key="sk-wrong").status_code == 401
    bob_rows = api(gw, "/api/v1/traces", key=BOB).json()["data"]
    assert {r["subject"] for r in bob_rows} == {"user:bob"} and len(bob_rows) == 3
    alice_trace = next(r for r in api(gw, "/api/v1/traces").json()["data"] if r["subject"] == "user:alice")
    assert api(gw, f"/api/v1/traces/{alice_trace['trace_id']}", key=BOB).status_code == 404
    assert api(gw, "/api/v1/traces", key=CAROL).json()["data"] == []
    stats = api(gw, "/api/v1/stats", key=BOB, since="1h").json()
    assert stats["totals"][0]["requests"] == 3
    me = api(gw, "/api/v1/me", key=BOB).json()
    assert me == me | {"subject": "user:bob", "admin": False, "auth": True}


def test_api_trace_detail_and_stats(gw: Proc, traffic: dict[str, Any]) -> None:
    row = api(gw, "/api/v1/traces", model="mock/gpt-4o-mini", q="Paris").json()["data"][0]
    detail = api(gw, f"/api/v1/traces/{row['trace_id']}").json()
    (root,) = detail["spans"]
    assert root["name"] == "POST /v1/chat/completions"
    names = [c["name"] for c in root["children"]]
    assert names[:2] == ["auth", "model resolution"] and names[2].startswith("chat ")
    assert "get_weather" in detail["request"]["input"]
    totals = api(gw, "/api/v1/stats", since="1h").json()["totals"][0]
    assert totals["input_tokens"] + totals["output_tokens"] == traffic["alice"] + traffic["bob"]
    assert totals["requests"] == 8 and totals["errors"] == 1
    by_user = {
        t["subject"]: t["requests"] for t in api(gw, "/api/v1/stats", group_by="subject").json()["totals"]
    }
    assert by_user == {"user:alice": 5, "user:bob": 3}


def test_api_export_jsonl(gw: Proc, traffic: dict[str, Any]) -> None:
    r = api(gw, "/api/v1/traces/export", subject="user:alice")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = r.text.strip().splitlines()
    assert len(lines) == 5 and all('"input"' in line for line in lines)


def test_session_cookie_is_httponly_strict_and_never_the_key(gw: Proc, traffic: dict[str, Any]) -> None:
    r = httpx.post(gw.url + "/api/v1/session", json={"credential": BOB}, timeout=10)
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and BOB not in cookie
    assert BOB not in r.text
    sid = cookie.split(";", 1)[0]
    listed = httpx.get(gw.url + "/api/v1/traces", headers={"cookie": sid}, timeout=10).json()["data"]
    assert {x["subject"] for x in listed} == {"user:bob"}
    assert httpx.post(gw.url + "/api/v1/session", content=b"{}", timeout=10).status_code == 400  # not JSON
    bad = httpx.post(gw.url + "/api/v1/session", json={"credential": "sk-nope"}, timeout=10)
    assert bad.status_code == 401 and "set-cookie" not in bad.headers
    httpx.request("DELETE", gw.url + "/api/v1/session", headers={"cookie": sid}, timeout=10)
    assert httpx.get(gw.url + "/api/v1/traces", headers={"cookie": sid}, timeout=10).status_code == 401


# --- the UI in Chromium ----------------------------------------------------------------------------


def sign_in(driver: Any, gw: Proc, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(gw.url + "/ui")
    field = wait_for(lambda: driver.find_element(By.ID, "credential"), what="the sign-in form")
    wait_for(lambda: field.is_displayed(), what="the sign-in dialog")
    field.send_keys(key)
    driver.find_element(By.ID, "signin-submit").click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#log-rows tr.row"), what="log rows")


def rows(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#log-rows tr.row")


def test_ui_admin_log_filter_trace_dashboard(browser: Any, gw: Proc, traffic: dict[str, Any]) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    sign_in(driver, gw, ALICE)
    wait_for(lambda: len(rows(driver)) == 8, what="8 requests in the log")
    assert driver.find_element(By.ID, "who-subject").text == "user:alice"
    # the key is nowhere the page or its storage can see it
    assert ALICE not in driver.page_source
    assert driver.execute_script("return document.cookie") == ""  # the session cookie is HttpOnly
    assert driver.execute_script("return localStorage.length + sessionStorage.length") == 0
    screenshot(driver, "requests")

    model = driver.find_element(By.ID, "f-model")
    model.send_keys("mock/gpt-4o-mini")
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", model)
    wait_for(lambda: len(rows(driver)) == 2, what="the model filter to narrow the log")
    assert "model=mock%2Fgpt-4o-mini" in driver.current_url
    Select(driver.find_element(By.ID, "f-status")).select_by_value("error")
    wait_for(lambda: driver.find_element(By.ID, "log-empty").is_displayed(), what="no errors for gpt-4o-mini")

    driver.get(gw.url + "/ui#/requests?q=Paris")
    wait_for(lambda: len(rows(driver)) == 1, what="the Paris request")
    rows(driver)[0].click()
    wait_for(
        lambda: driver.find_elements(By.CSS_SELECTOR, "#waterfall .wf-row[data-span-id]"), what="waterfall"
    )
    spans = driver.find_elements(By.CSS_SELECTOR, "#waterfall .wf-row[data-span-id]")
    assert len(spans) == 4
    assert driver.find_elements(By.CSS_SELECTOR, "#waterfall .bar.client")
    convo = driver.find_element(By.ID, "conversation")
    roles = [e.text.split("\n")[0].lower() for e in convo.find_elements(By.CSS_SELECTOR, ".msg .role")]
    assert roles[:2] == ["system", "user"] and "assistant" in roles[-1]
    tool = convo.find_element(By.CSS_SELECTOR, ".tool-call")
    assert "get_weather" in tool.text and "Paris" in tool.text
    assert "temp_c" in convo.find_element(By.CSS_SELECTOR, ".tool-result").text
    assert driver.find_element(By.ID, "span-detail").text  # the selected span's attributes
    driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    screenshot(driver, "trace")

    driver.get(gw.url + "/ui#/dashboard?since=1h")
    kpi = wait_for(lambda: driver.find_element(By.ID, "kpi-tokens"), what="the dashboard")
    total = traffic["alice"] + traffic["bob"]
    wait_for(lambda: kpi.get_attribute("data-value") == str(total), what="the token total")
    assert kpi.find_element(By.TAG_NAME, "strong").text == f"{total:,}"
    assert driver.find_element(By.ID, "kpi-requests").get_attribute("data-value") == "8"
    assert driver.find_elements(By.CSS_SELECTOR, "#chart-requests rect.bar")
    by_user = driver.find_element(By.ID, "by-user").text
    assert "user:alice" in by_user and "user:bob" in by_user
    screenshot(driver, "dashboard")
    driver.find_element(By.ID, "signout").click()
    wait_for(lambda: driver.find_element(By.ID, "credential").is_displayed(), what="signed out")


def test_ui_non_admin_sees_only_own(browser: Any, gw: Proc, traffic: dict[str, Any]) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    driver = browser
    driver.delete_all_cookies()
    sign_in(driver, gw, BOB)
    wait_for(lambda: len(rows(driver)) == 3, what="bob's 3 requests")
    assert {r.find_element(By.CSS_SELECTOR, "td.subject").text for r in rows(driver)} == {"user:bob"}
    assert "own traces" in driver.find_element(By.ID, "who").text
    driver.get(gw.url + "/ui#/dashboard?since=1h")
    kpi = wait_for(lambda: driver.find_element(By.ID, "kpi-tokens"), what="the dashboard")
    wait_for(lambda: kpi.get_attribute("data-value") == str(traffic["bob"]), what="bob's token total")
    assert "user:alice" not in driver.find_element(By.ID, "by-user").text
    driver.find_element(By.ID, "signout").click()


def test_ui_auth_off_banner(browser: Any, mock: Proc, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    gw = start_gateway(
        {"providers": [provider("mock", mock.url, ["gpt-4o"])], "tracing": {"flush_interval_ms": 50}},
        tmp_path,
    )
    try:
        client(gw, "unused").chat.completions.create(
            model="mock/gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert api(gw, "/api/v1/me", key=None).json()["auth"] is False
        browser.get(gw.url + "/ui")
        banner = wait_for(lambda: browser.find_element(By.ID, "banner"), what="the banner")
        wait_for(lambda: banner.is_displayed(), what="the auth-off banner")
        assert "everything" in banner.text.lower() or "every request" in banner.text.lower()
        wait_for(lambda: len(rows(browser)) == 1, what="the request")
    finally:
        gw.stop()


def test_ui_static_files_and_headers(gw: Proc) -> None:
    page = httpx.get(gw.url + "/ui", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    js = httpx.get(gw.url + "/ui/app.js", timeout=10)
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert httpx.get(gw.url + "/ui/../gateway.yaml", timeout=10).status_code == 404
    assert httpx.post(gw.url + "/ui", timeout=10).status_code == 405


def test_several_workers_without_nats_explain_where_the_store_is(mock: Proc, tmp_path: Path) -> None:
    gw = start_gateway({"providers": [provider("mock", mock.url, ["gpt-4o"])]}, tmp_path, workers=2)
    try:
        me = api(gw, "/api/v1/me", key=None).json()
        assert me["store"] is False and "--workers" in me["store_reason"]
        r = api(gw, "/api/v1/traces", key=None)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert httpx.get(gw.url + "/ui", timeout=10).status_code == 200
        client(gw, "unused").chat.completions.create(model="mock/gpt-4o", messages=[{"role": "user", "content": "x"}])
    finally:
        gw.stop()
    assert not list(tmp_path.glob("traces-*.duckdb"))  # no worker opened the file


def test_oversized_sign_in_is_refused(gw: Proc) -> None:
    r = httpx.post(
        gw.url + "/api/v1/session",
        content=b'{"credential": "' + b"x" * 20000 + b'"}',
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 413


def test_config_reload_changes_admins_and_ends_old_sessions(mock: Proc, tmp_path: Path) -> None:
    import time

    import yaml

    config = {
        "providers": [provider("mock", mock.url, ["gpt-4o"])],
        "auth": {"api_keys": [{"subject": "user:bob", "key_sha256": sha(BOB)}]},
        "reload": {"poll_interval_s": 0.2},
    }
    gw = start_gateway(config, tmp_path)
    try:
        r = httpx.post(gw.url + "/api/v1/session", json={"credential": BOB}, timeout=10)
        cookie = {"cookie": r.headers["set-cookie"].split(";", 1)[0]}
        assert httpx.get(gw.url + "/api/v1/me", headers=cookie, timeout=10).json()["admin"] is False
        on_disk = yaml.safe_load(gw.log_path.with_suffix(".yaml").read_text())
        gw.log_path.with_suffix(".yaml").write_text(yaml.safe_dump({**on_disk, "ui": {"admins": ["user:bob"]}}))
        deadline = time.monotonic() + 15
        while not api(gw, "/api/v1/me", key=BOB).json()["admin"]:
            assert time.monotonic() < deadline, "the reload never made bob an admin"
            time.sleep(0.1)
        # a session from before the reload is over: sign in again under the new credentials
        assert httpx.get(gw.url + "/api/v1/me", headers=cookie, timeout=10).status_code == 401
    finally:
        gw.stop()
