"""
Flower as ops see it: headless Chromium (Debian's `chromium`, driven by
Playwright with the system browser, nothing downloaded) against
`celery -A worker flower --url_prefix=flower` with basic auth, beside a real
worker sending task events and the Kuper emulator.

Leads go in two ways: through the producer (ledger first, then a wake-up) and
as raw `leadrelay.submit` messages, some with an e-mail the Kuper lead has no
field for (refused at the door). Once the worker has drained them, the test
reads every page ops open (dashboard, tasks, a task's detail, broker, workers,
a worker) and finds there the queues with their lengths and a drain's summary
as its task's result, and nowhere a lead's phone (in any formatting), an
e-mail, Kuper's password or Flower's. The tasks page is saved as a screenshot:
in the test's tmp dir, and in LEADRELAY_SCREENSHOT_DIR when that is set (the
README's picture is made so).
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from sqlalchemy import func, select

from producers.client import Producer
from sandbox import free_port, serve
from sandbox import kuper as kuper_sandbox
from tests.factories import kuper_lead, kuper_table
from tests.system.conftest import Relay
from worker.delivery.context import WorkerContext, build
from worker.ledger.tables import DeliveryRow
from worker.settings import load, parse_destinations

DESTINATION = "kuper-main"
QUEUE = f"deliver.{DESTINATION}"
#: secret per run: a password the pages could only show by leaking it
KUPER_PASSWORD = f"kuper-{secrets.token_hex(12)}"
FLOWER_AUTH = ("ops", f"flower-{secrets.token_hex(12)}")
PREFIX = "flower"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREEN = {"width": 1280, "height": 800}
pytestmark = [pytest.mark.timeout(300)]

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")


def require_chromium() -> None:
    """Debian's chromium drives the test; CI installs it, so there its absence fails."""
    if Path(CHROMIUM).exists():
        return
    message = f"no {CHROMIUM}: apt-get install chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def phones(n: int) -> list[str]:
    """`n` distinct mobile phones as people write them, +7 (9xx) xxx-xx-xx, from a random start."""
    start = 9_000_000_000 + secrets.randbelow(10**9 - n)
    numbers = [str(k) for k in range(start, start + n)]
    return [f"+7 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}" for d in numbers]


def digits(phone: str) -> str:
    """A Russian phone's ten digits after the country code: what any formatting keeps."""
    return re.sub(r"\D", "", phone)[-10:]


def digit_runs(text: str) -> list[str]:
    """Every run of digits in `text`, joined across the spaces, brackets and dashes between."""
    return [re.sub(r"\D", "", run) for run in re.findall(r"\d[\d\s()+.\-]*\d", text)]


def test_a_phone_is_found_in_any_formatting() -> None:
    """The page check's own check: a phone however written is one digit run."""
    phone = "+7 (916) 123-45-67"
    for written in (phone, "79161234567", "8 916 123 45 67", "+7-916-123-4567"):
        assert any(digits(phone) in run for run in digit_runs(f"call {written}, please"))


@pytest.fixture(scope="module")
def kuper_url() -> Iterator[str]:
    app = kuper_sandbox.create_app(username="partner", password=KUPER_PASSWORD)
    with serve(app) as url:
        yield url


@pytest.fixture
def relay(relay_factory: Callable[..., Relay], kuper_url: str) -> Relay:
    httpx.post(f"{kuper_url}/__sandbox__/reset")
    # slow enough that drains leave a backlog behind them: 20 leads a request, 2 requests/s
    table = kuper_table(kuper_url, password="${KUPER_PASSWORD}", rate=2, burst=1, batch_size=20)
    relay = relay_factory({DESTINATION: table}, drain_budget="2")
    relay.env["KUPER_PASSWORD"] = KUPER_PASSWORD
    relay.start_worker(concurrency=2, events=True)
    return relay


def start_flower(relay: Relay) -> str:
    """`celery -A worker flower` under /flower with basic auth; its base URL once it answers."""
    port = free_port()
    log = (relay.workdir / "flower.log").open("ab")
    relay.procs["flower"] = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            f"--url_prefix={PREFIX}",
            "--read_only=true",
        ],
        env={**relay.env, "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH)},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=relay.workdir,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/{PREFIX}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for("flower", up, relay, 60)
    return url


def wait_for(what: str, check: Callable[[], bool], relay: Relay, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for name, proc in relay.procs.items():
            assert proc.poll() is None, f"{name} exited:\n{relay.log(name)[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s"
        time.sleep(0.3)


def api(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}{path}", auth=FLOWER_AUTH, params=params, timeout=15)
    assert response.status_code == 200, (path, response.status_code)
    return response.json()


def delivered(ctx: WorkerContext) -> int:
    with ctx.sessions() as s:
        count = s.scalar(
            select(func.count()).select_from(DeliveryRow).where(DeliveryRow.state == "delivered")
        )
    return int(count or 0)


def submit_raw(relay: Relay, leads: list[dict[str, Any]]) -> None:
    """Leads as an app without our code sends them: `leadrelay.submit`, the lead in kwargs."""
    client = Celery(broker=relay.env["LEADRELAY_BROKER_URL"])
    for n, lead in enumerate(leads):
        client.send_task(
            "leadrelay.submit",
            queue="leadrelay.intake",
            kwargs={"destination": DESTINATION, "lead": lead, "idempotency_key": f"raw-{n}"},
        )
    client.close()


def drain_summaries(url: str) -> list[dict[str, Any]]:
    """The results of the drains Flower has seen succeed, as the dicts they are."""
    tasks = api(url, "/api/tasks", taskname="leadrelay.deliver", state="SUCCESS")
    return [ast.literal_eval(t["result"]) for t in tasks.values() if t.get("result")]


def test_flower_in_a_browser_shows_queues_and_drains_and_no_lead(
    relay: Relay, kuper_url: str, ledger_url: str, redis_url: str, tmp_path: Path
) -> None:
    require_chromium()
    url = start_flower(relay)
    numbers = phones(125)
    produced = [kuper_lead(phone=p) for p in numbers[:120]]
    raw = [kuper_lead(phone=p) for p in numbers[120:123]]
    emails = [f"ivanova.{secrets.token_hex(3)}@example.ru" for _ in range(2)]
    # Kuper's lead has no e-mail field: these two are refused at the door, and say why
    with_email = [
        {**kuper_lead(phone=p), "email": e} for p, e in zip(numbers[123:], emails, strict=True)
    ]
    settings = load(
        database_url=ledger_url,
        broker_url=redis_url,
        destinations=parse_destinations(
            {DESTINATION: kuper_table("http://127.0.0.1:9", password=KUPER_PASSWORD)}
        ),
    )
    ctx = build(settings)
    httpx.post(f"{kuper_url}/__sandbox__/faults", json={"status": 429, "retry_after": "1"})
    try:
        Producer(ctx).submit_many(DESTINATION, produced)
        submit_raw(relay, raw + with_email)
        wait_for("every lead delivered", lambda: delivered(ctx) == 123, relay, 90)
    finally:
        ctx.close()
    wait_for(
        "every drain's summary in flower",
        lambda: sum(s["outcomes"].get("delivered", 0) for s in drain_summaries(url)) == 123,
        relay,
    )
    summaries = drain_summaries(url)
    assert sum(s["throttles"] for s in summaries) == 1  # Kuper's one 429
    assert any(s["backlog"] > 0 and s["oldest_due_s"] is not None for s in summaries)
    wait_for(
        "the destination's queue in flower",
        lambda: QUEUE in {q["name"] for q in api(url, "/api/queues/length")["active_queues"]},
        relay,
    )

    pages = browse(url, tmp_path)

    assert "***" in pages["task (submit)"], "a raw lead's fields show masked"
    shown = "\n".join(pages.values())
    leads = [*produced, *raw, *with_email]
    runs = digit_runs(shown)
    assert not [p for p in (digits(lead["phone"]) for lead in leads) if any(p in r for r in runs)]
    for secret in (*emails, *(e.split("@")[0] for e in emails), KUPER_PASSWORD, FLOWER_AUTH[1]):
        assert secret.lower() not in shown.lower()


def browse(url: str, tmp_path: Path) -> dict[str, str]:
    """Every page ops open, checked as it renders; each page's HTML and text, by name."""
    pages: dict[str, str] = {}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            anonymous = browser.new_context(viewport=SCREEN).new_page()
            for path in ("/", "/tasks", "/broker", "/api/tasks"):
                assert refused(anonymous, url + path) == 401, path
            user, password = FLOWER_AUTH
            ops = browser.new_context(
                viewport=SCREEN, http_credentials={"username": user, "password": password}
            )
            page = ops.new_page()
            pages |= {
                "dashboard": read(page, f"{url}/", "#workers-table tbody tr"),
                "workers": read(page, f"{url}/workers", "#workers-table tbody tr"),
            }
            pages["broker"] = read(page, f"{url}/broker", "#queue-table")
            assert_queue_lengths(page)
            pages["tasks"] = read(page, f"{url}/tasks", "#tasks-table tbody tr td")
            worker = link(page, "#tasks-table a[href*='/worker/']")
            pages["tasks (deliver)"] = read(
                page, f"{url}/tasks?name=leadrelay.deliver", "#tasks-table tbody tr td"
            )
            drain = assert_a_drain_shows_its_summary(page)
            screenshot(page, tmp_path)
            pages["tasks (submit)"] = read(
                page, f"{url}/tasks?name=leadrelay.submit", "#tasks-table tbody tr td"
            )
            submit = link(page, "#tasks-table a[href*='/task/']")
            origin = url.removesuffix(f"/{PREFIX}")
            pages["task (deliver)"] = read(page, origin + drain, "body")
            pages["task (submit)"] = read(page, origin + submit, "body")
            pages["worker"] = read(page, origin + worker, "body")
        finally:
            browser.close()
    return pages


def refused(page: Any, address: str) -> int:
    """
    The status a browser without credentials gets at `address`. Chromium
    answers a 401 it has nothing to offer to with a navigation error
    (ERR_INVALID_AUTH_CREDENTIALS), so the status is read off the response.
    """
    with page.expect_response(address) as answer, contextlib.suppress(sync_api.Error):
        page.goto(address)
    return int(answer.value.status)


def read(page: Any, address: str, ready: str) -> str:
    """Open `address` (authorised), wait for `ready` to render; the page's HTML and text."""
    response = page.goto(address)
    assert response is not None and response.status == 200, (address, response)
    page.wait_for_selector(ready, timeout=30_000)
    page.wait_for_load_state("networkidle")
    return f"{page.content()}\n{page.inner_text('body')}"


def link(page: Any, selector: str) -> str:
    """Where the first link matching `selector` points (a path under the prefix)."""
    href = page.locator(selector).first.get_attribute("href")
    assert href is not None and href.startswith(f"/{PREFIX}/"), (selector, href)
    return str(href)


def assert_queue_lengths(page: Any) -> None:
    """The Broker page lists each destination's queue with how many messages it holds."""
    rows = page.locator("#queue-table tbody tr")
    cells = {
        row.locator("td").first.inner_text().strip(): row.locator("td").nth(1).inner_text()
        for row in rows.all()
    }
    deliver = {name: n for name, n in cells.items() if name.startswith("deliver.")}
    assert QUEUE in deliver, cells
    assert all(n.strip().isdigit() for n in deliver.values()), deliver


def assert_a_drain_shows_its_summary(page: Any) -> str:
    """A leadrelay.deliver row whose result names what it delivered; its detail page's path."""
    header = page.eval_on_selector_all(
        "#tasks-table thead th", "ths => ths.map(th => th.dataset.column)"
    )
    assert {"args", "result"} <= set(header), header
    row = page.locator("#tasks-table tbody tr", has_text="'delivered'").first
    row.wait_for(timeout=30_000)
    cells = dict(zip(header, row.locator("td").all_inner_texts(), strict=True))
    assert cells["name"] == "leadrelay.deliver"
    assert DESTINATION in cells["args"]
    summary = ast.literal_eval(cells["result"])
    assert summary["outcomes"]["delivered"] > 0
    assert {"requests", "throttles", "backlog", "backlog_capped", "oldest_due_s"} <= set(summary)
    return link(row, "a[href*='/task/']")


def screenshot(page: Any, tmp_path: Path) -> None:
    """The tasks page as ops see it: in the test's tmp dir, and where the README takes it."""
    targets = [tmp_path / "flower-tasks.png"]
    if os.environ.get("LEADRELAY_SCREENSHOT_DIR"):
        targets.append(Path(os.environ["LEADRELAY_SCREENSHOT_DIR"]) / "flower-tasks.png")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target))
        assert target.stat().st_size > 0
