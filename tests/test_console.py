"""The support console end to end, in headless Chromium (Debian's `chromium` + `chromium-driver`,
driven by Selenium) against the real API on a real port: a handoff from the webhook shows up in
the queue, the agent claims it and replies (the reply reaches the Twilio sandbox), hands it back,
and the assistant answers the next message. Screenshots of each step go to
`test-artifacts/console/<test>/`.
"""

from __future__ import annotations

import base64
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.inbound import sign
from graphs.prompts import HANDOFF_REPLY
from server.api.auth import Role, mint_token
from server.api.auth_keys import DEV_JWT_SECRET
from server.api.console import CONTENT_SECURITY_POLICY
from server.app import create_app
from server.cli import demo
from server.settings import Settings
from store.embedded import free_port
from store.records import Tenant
from tests.conftest import ROOT, inbound_form, rows, run_jobs
from tests.fakes import ScriptedModel
from tests.templating import register_template
from tests.test_brain import ALL, give_plan

ARTIFACTS = ROOT / "test-artifacts" / "console"
AGENT = "ana@acme"
WAIT = 30.0


def _browser_binaries() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


class LiveApi:
    """The API served by uvicorn on a free port, in a thread (the background relay off:
    `run_jobs` relays and runs the jobs, as in the other support tests)."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        config = uvicorn.Config(
            create_app(settings, relay=False), host="127.0.0.1", port=self.port,
            log_level="warning", lifespan="on",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="console-api", daemon=True)

    def start(self) -> LiveApi:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("the API did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def say(self, tenant: Tenant, text: str, **extra: str) -> None:
        """Post a WhatsApp message from the test user to the webhook, signed as Twilio signs."""
        form = inbound_form(tenant, text, **extra)
        signature = sign(tenant.twilio_auth_token, self.settings.public_url("/webhooks/inbound"),
                         form)  # fmt: skip
        response = httpx.post(
            f"{self.url}/webhooks/inbound", data=form,
            headers={"X-Twilio-Signature": signature}, timeout=10,
        )  # fmt: skip
        assert response.status_code == 200, response.text


@pytest.fixture
def api(settings: Settings) -> Iterator[LiveApi]:
    live = LiveApi(settings).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium (installed by `make install` / `.ci/run` when missing)."""
    found = _browser_binaries()
    if found is None:
        message = "chromium and chromedriver are not installed (apt-get install chromium " \
                  "chromium-driver, or `make install` as root)"  # fmt: skip
        pytest.fail(message)  # never a silent skip: `make test` installs them
    binary, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--lang=en-US"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    """Numbered screenshots of one test, kept as artifacts."""

    def __init__(self, driver: WebDriver, name: str) -> None:
        self.driver = driver
        self.folder = ARTIFACTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.taken: list[Path] = []

    def __call__(self, step: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{step}.png"
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]  # type: ignore[attr-defined]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        self.taken.append(path)
        print(f"screenshot: {path}")
        return path


@pytest.fixture
def shots(browser: WebDriver, request: pytest.FixtureRequest) -> Shots:
    name = re.sub(r"^test_", "", request.node.name)[:80]
    return Shots(browser, name)


def until(driver: WebDriver, check: Callable[[WebDriver], Any], what: str) -> Any:
    """Wait for `check` to hold in the page; fail saying what never showed up."""
    try:
        return WebDriverWait(
            driver, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
        ).until(check)
    except TimeoutException as exc:
        error = driver.find_element(By.ID, "error")
        shown = error.text if error.is_displayed() else "(no error shown)"
        raise AssertionError(f"timed out waiting for {what}; the page says: {shown}") from exc


def by_id(driver: WebDriver, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def text_of(element_id: str, expected: str) -> Callable[[WebDriver], bool]:
    return lambda d: expected in d.find_element(By.ID, element_id).text


def queue_row(driver: WebDriver, conversation: str) -> str:
    """Wait for the conversation's row in the queue and return its text (the queue refreshes
    itself, so rows are read in one go in the page rather than held as elements)."""
    return until(  # type: ignore[no-any-return]
        driver,
        lambda d: d.execute_script(
            "const row = document.querySelector(`tr[data-id='${arguments[0]}']`);"
            "return row && row.offsetParent !== null ? row.innerText : null;",
            conversation,
        ),
        "the conversation in the queue",
    )


def open_from_queue(driver: WebDriver, conversation: str) -> None:
    """Click the row's Open button (again, if a refresh replaced the row meanwhile)."""
    selector = f'tr[data-id="{conversation}"] [data-testid="open-conversation"]'

    def click(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    until(driver, click, "the Open button")


def texts(driver: WebDriver, testid: str) -> list[str]:
    """The text of every element with `testid`, read in one go (the page re-renders itself)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "return Array.from(document.querySelectorAll(`[data-testid='${arguments[0]}']`),"
        " (e) => e.textContent);",
        testid,
    )


def message_bodies(driver: WebDriver) -> list[str]:
    return texts(driver, "message-body")


def support_token(settings: Settings, tenant: Tenant, who: str = AGENT) -> str:
    return mint_token(settings, subject=who, role=Role.support_agent, tenant_id=tenant.id)


def open_console(driver: WebDriver, api: LiveApi, token: str) -> None:
    driver.get(f"{api.url}/support#token={token}")


def conversation_of(settings: Settings) -> str:
    ((found,),) = rows(settings, "select id from conversations order by created_at desc limit 1")
    return str(found)


def hand_off(api: LiveApi, settings: Settings, tenant: Tenant, sandbox: TwilioSandbox) -> str:
    """The user asks for a person through the webhook; the graph pauses on the handoff."""
    give_plan(settings, tenant, ALL)
    api.say(tenant, "quero falar com um atendente")
    run_jobs(settings)
    assert [m["body"] for m in sandbox.wait_for_messages(1)] == [HANDOFF_REPLY["pt"]]
    return conversation_of(settings)


def csp_violations(driver: WebDriver) -> list[str]:
    return [
        entry["message"] for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]  # fmt: skip


def test_the_page_and_its_files_are_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/support")
    script = client.get("/support/console.js")
    style = client.get("/support/console.css")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text and "onclick" not in page.text, "no inline script"
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert not re.search(r"\.(inner|outer)HTML\b|insertAdjacentHTML|document\.write", script.text)
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert "/support" not in client.app.openapi()["paths"]  # type: ignore[attr-defined]


def test_an_agent_answers_a_handoff_from_the_console_and_hands_it_back(
    api: LiveApi,
    browser: WebDriver,
    shots: Shots,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    conversation = hand_off(api, settings, tenant, sandbox)

    # The queue: the conversation waits, with its reason and the user's last message.
    open_console(browser, api, support_token(settings, tenant))
    row = queue_row(browser, conversation)
    assert "The user asked for a person." in row
    assert "quero falar com um atendente" in row
    assert "token=" not in browser.current_url, "the token leaves the address bar"
    assert AGENT in by_id(browser, "whoami-text").text
    shots("queue")

    # The conversation: history, why it came here, the state changes.
    open_from_queue(browser, conversation)
    until(browser, text_of("conv-state", "HANDOFF"), "the conversation view")
    assert message_bodies(browser) == ["quero falar com um atendente", HANDOFF_REPLY["pt"]]
    assert "The user asked for a person." in by_id(browser, "conv-reason").text
    assert "ACTIVE → HANDOFF" in by_id(browser, "transitions").text
    assert "handoff" in by_id(browser, "conv-run").text
    shots("conversation")

    # Claim.
    by_id(browser, "claim-button").click()
    until(browser, text_of("conv-claimed", f"{AGENT} (you)"), "the claim")
    assert rows(settings, "select claimed_by from conversations") == [(AGENT,)]
    shots("claimed")

    # Reply: it goes through the outbox to WhatsApp (the sandbox).
    reply = "Olá! Aqui é a Ana, do suporte. Como posso ajudar?"
    by_id(browser, "reply-text").send_keys(reply)
    by_id(browser, "reply-button").click()
    until(browser, text_of("status", "Reply queued"), "the reply to be accepted")
    run_jobs(settings)
    sent = sandbox.wait_for_messages(2)[-1]
    assert sent["body"] == reply and sent["to"] == "whatsapp:+5511988887777"
    until(browser, lambda d: reply in message_bodies(d), "the reply in the history")
    until(browser, text_of("conv-state", "WAITING_USER"), "the state after the reply")
    assert by_id(browser, "reply-text").get_attribute("value") == ""
    shots("replied")

    # Hand back: the job resumes the paused graph; the conversation is the assistant's again.
    by_id(browser, "handback-note").send_keys("Resolvido pelo suporte.")
    by_id(browser, "handback-button").click()
    until(browser, text_of("status", "Handed back"), "the hand-back to be accepted")
    run_jobs(settings)
    until(browser, text_of("conv-state", "ACTIVE"), "the conversation to be ACTIVE again")
    assert rows(settings, "select state, claimed_by from conversations") == [("ACTIVE", None)]
    assert "Resolvido pelo suporte." in by_id(browser, "transitions").text
    shots("handed-back")

    # The assistant answers the user's next message.
    llm.structured({"route": "general", "reason": "the user thanks us"}).say(
        "De nada! Estou de volta: posso ajudar com mais alguma coisa?"
    )
    api.say(tenant, "obrigado pela ajuda!")
    run_jobs(settings)
    answer = sandbox.wait_for_messages(3)[-1]["body"]
    assert answer == "De nada! Estou de volta: posso ajudar com mais alguma coisa?"
    until(browser, lambda d: answer in message_bodies(d), "the assistant's answer in the history")
    authors = texts(browser, "message-author")
    assert authors[-3:] == [f"{AGENT} (staff)", "Demo User (user)", "Assistant"], authors
    shots("assistant-answers")

    # Back to the queue: nobody waits.
    by_id(browser, "back-button").click()
    until(browser, lambda d: by_id(d, "queue-empty").is_displayed(), "the empty queue")
    shots("queue-empty")
    assert csp_violations(browser) == []


def test_a_wrong_or_expired_token_shows_the_apis_error(
    api: LiveApi, browser: WebDriver, shots: Shots, settings: Settings, tenant: Tenant
) -> None:
    good = support_token(settings, tenant)
    claims = jwt.decode(good, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-server-secret-" * 3, algorithm="HS256")
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else DEV_JWT_SECRET
    past = int(time.time()) - 3600
    expired = jwt.encode({**claims, "iat": past - 60, "exp": past}, secret, algorithm="HS256")

    # A link with a token signed by someone else.
    open_console(browser, api, forged)
    until(browser, text_of("error", "signature does not verify"), "the refusal")
    assert by_id(browser, "error").get_attribute("data-code") == "invalid_token"
    assert by_id(browser, "signin-screen").is_displayed()
    assert not by_id(browser, "queue-screen").is_displayed()
    shots("forged-token")

    # A pasted token that has expired.
    box = by_id(browser, "token-input")
    box.clear()
    box.send_keys(expired)
    by_id(browser, "signin-button").click()
    until(browser, text_of("error", "The token has expired; get a new one."), "the expiry")
    assert by_id(browser, "error").get_attribute("data-code") == "token_expired"
    shots("expired-token")

    # Something that is not a token at all: the page says so before asking the API.
    box.clear()
    box.send_keys("hello")
    by_id(browser, "signin-button").click()
    until(browser, text_of("error", "That is not a token"), "the local refusal")
    shots("not-a-token")

    # A good token then works, and nothing was stored from the failed attempts before it.
    box.clear()
    box.send_keys(good)
    by_id(browser, "signin-button").click()
    until(browser, lambda d: by_id(d, "queue-screen").is_displayed(), "the queue")
    assert not by_id(browser, "error").is_displayed()
    stored = browser.execute_script("return sessionStorage.getItem('conversa.support.token')")
    assert stored == good
    shots("signed-in")


def test_message_text_is_shown_as_text_never_run(
    api: LiveApi,
    browser: WebDriver,
    shots: Shots,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
) -> None:
    conversation = hand_off(api, settings, tenant, sandbox)
    attack = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    api.say(tenant, attack, ProfileName='<b onmouseover="window.__pwned = 3">Eve</b>')
    run_jobs(settings)
    assert rows(settings, "select status from messages where body = %s", attack) == [("handoff",)]

    open_console(browser, api, support_token(settings, tenant))
    assert attack in queue_row(browser, conversation)
    shots("queue")
    open_from_queue(browser, conversation)
    until(browser, lambda d: attack in message_bodies(d), "the message, as text")
    shots("conversation")

    assert browser.execute_script("return window.__pwned") is None
    for tag in ("script", "img", "b"):
        assert browser.find_elements(By.CSS_SELECTOR, f"main {tag}") == [], f"a <{tag}> got in"
    assert csp_violations(browser) == []


def test_outside_the_window_the_console_offers_the_template(
    api: LiveApi,
    browser: WebDriver,
    shots: Shots,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
) -> None:
    conversation = hand_off(api, settings, tenant, sandbox)
    rows(settings, "update conversations set last_inbound_at = now() - interval '25 hours' "
         "returning id")  # fmt: skip
    sid = register_template(
        settings, sandbox, tenant, "staff_followup", "Equipe Acme: {{1}}", {"1": "text"}
    )

    open_console(browser, api, support_token(settings, tenant))
    queue_row(browser, conversation)
    open_from_queue(browser, conversation)
    until(browser, text_of("conv-window", "closed"), "the closed window")
    by_id(browser, "reply-text").send_keys("Ainda precisa de ajuda?")
    by_id(browser, "reply-button").click()
    until(browser, text_of("error", "over 24 hours old"), "the window_closed refusal")
    assert by_id(browser, "error").get_attribute("data-code") == "window_closed"
    template = by_id(browser, "template-button")
    assert template.is_displayed()
    shots("window-closed")

    template.click()
    until(browser, text_of("status", "Template queued"), "the template to be accepted")
    run_jobs(settings)
    sent = sandbox.wait_for_messages(2)[-1]
    assert (sent["content_sid"], sent["body"]) == (sid, "Equipe Acme: Ainda precisa de ajuda?")
    assert not by_id(browser, "template-button").is_displayed()
    shots("template-sent")


def test_the_demo_link_signs_in_as_a_support_agent(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    link = demo._console_link(settings, "http://127.0.0.1:8000", tenant.id)

    page, _, fragment = link.partition("#token=")
    assert page == "http://127.0.0.1:8000/support"
    claims = jwt.decode(fragment, options={"verify_signature": False})
    assert claims["role"] == "support_agent" and claims["tenant_id"] == str(tenant.id)
    queue = client.get(
        f"/api/v1/tenants/{tenant.id}/support/queue",
        headers={"Authorization": f"Bearer {fragment}"},
    )
    assert queue.status_code == 200, queue.text
