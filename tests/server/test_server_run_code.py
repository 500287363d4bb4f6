"""verl's own SandboxFusion client against a real ``rewardflow serve`` on ``POST /run_code``.

The client lines below are copied from verl (Apache-2.0), ``verl/utils/reward_score/sandbox_fusion/utils.py`` at
commit b178a3cd56f58b2d502255daba591e92833930a7 (identical in the verl 0.9.1 wheel): ``call_sandbox_api`` (the
request body, the retry on 504 only, the request timeout) and how ``_process_single_case`` turns the reply into
its result code (True / False, -1 api or sandbox error, -2 runtime error, -3 timeout, -4 compile error), logging
and metadata left out. So the byte format and its reading are verl's, not ours. The field names are those of
SandboxFusion's ``sandbox/server/sandbox_api.py`` (bytedance/SandboxFusion at 469de08).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rewardflow.sandbox import Isolation, probe_isolation
from tests.server.conftest import Server, write_spec

requests = pytest.importorskip("requests")

if probe_isolation() < Isolation.UNSHARE:
    pytest.skip("no sandbox here at unshare level or above (install bubblewrap)", allow_module_level=True)

API_TIMEOUT = 10
MAX_RETRIES = 3
INITIAL_RETRY_DELAY = 1


# ---- copied from verl (utils.py, b178a3c): call_sandbox_api, uuid log prefix and logging left out ----
def call_sandbox_api(sandbox_fusion_url, code, stdin, compile_timeout, run_timeout, memory_limit_mb, language="python"):  # type: ignore[no-untyped-def]
    payload = json.dumps(
        {
            "compile_timeout": compile_timeout,
            "run_timeout": run_timeout,
            "code": code,
            "stdin": stdin,
            "memory_limit_MB": memory_limit_mb,
            "language": language,  # Use the passed language parameter
            "files": {},
            "fetch_files": [],
        }
    )
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    request_timeout = compile_timeout + run_timeout + API_TIMEOUT
    last_error = None
    for attempt in range(MAX_RETRIES):
        try:
            response = requests.post(sandbox_fusion_url, headers=headers, data=payload, timeout=request_timeout)
            if response.status_code == 504:
                last_error = f"API Request Error: Gateway Timeout (504) on attempt {attempt + 1}/{MAX_RETRIES}"
                if attempt < MAX_RETRIES - 1:
                    time.sleep(INITIAL_RETRY_DELAY * (attempt + 1))
                continue
            response.raise_for_status()
            return response.json(), None
        except requests.exceptions.RequestException as e:
            last_error = f"API Request Error: {e}"
            break
        except json.JSONDecodeError as e:
            last_error = f"API Response JSON Decode Error: {e}"
            break
        except Exception as e:
            last_error = f"Unexpected Error: {e}"
            break
    return None, last_error if last_error else "API Call Failed after retries"


# ---- copied from verl (utils.py, b178a3c): _process_single_case, the part that reads the reply ----
def verl_result_status(api_response, error_msg, expected_output):  # type: ignore[no-untyped-def]
    if error_msg:
        return -1
    compile_result = api_response.get("compile_result")
    run_result = api_response.get("run_result")
    compile_status = compile_result.get("status") if compile_result else None
    run_status = run_result.get("status") if run_result else None
    api_status = api_response.get("status")
    if api_status == "SandboxError":
        return -1
    elif api_status == "Failed":
        is_compile_error = compile_result and (
            compile_status in ["Error", "TimeLimitExceeded"]
            or (compile_status == "Finished" and compile_result.get("return_code") != 0)
        )
        if is_compile_error:
            return -4
        elif run_result:
            is_runtime_error = (
                run_status == "TimeLimitExceeded"
                or run_status == "Error"
                or (run_status == "Finished" and run_result.get("return_code") != 0)
            )
            if is_runtime_error:
                return -3 if run_status == "TimeLimitExceeded" else -2
            return -1
        return -1
    elif api_status == "Success":
        if run_result and run_status == "Finished":
            actual_output = run_result.get("stdout") if run_result.get("stdout") is not None else ""
            if expected_output is None or str(actual_output).rstrip("\n") == str(expected_output).rstrip("\n"):
                return True
            return False
        return -1
    return -1


# ---- end of copied code ----


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("run_code")
    spec = write_spec(d / "spec.yaml", "workers: 2\nrewards:\n  - reward: tests.server._service_rewards:row_id\n")
    with Server(spec) as server:
        yield server.url + "/run_code"


def run(url: str, code: str, stdin: str | None = None, language: str = "python", timeout: int = 10) -> Any:
    reply, error = call_sandbox_api(url, code, stdin, timeout, timeout, 1024, language)
    assert error is None, error
    return reply


SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
CPP_SUM = "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << std::endl; }\n"


# (code, stdin, expected stdout, verl's result code): each row one way a program is judged.
PYTHON_CASES = [
    (SUM, "2 3\n", "5", True),  # a passing program, reading stdin
    (SUM.replace("a + b", "a - b"), "2 3\n", "5", False),  # wrong output: Success, the client compares
    ("raise ValueError('boom')\n", None, None, -2),  # runtime error: Failed, return code 1
    ("import sys\nprint('partial')\nsys.exit(7)\n", None, None, -2),  # nonzero exit
    ("import os\nos.kill(os.getpid(), 9)\n", None, None, -2),  # killed by a signal: return code -9
]


@pytest.mark.parametrize(("code", "stdin", "expected", "verdict"), PYTHON_CASES)
def test_verl_reads_python_verdicts(url: str, code: str, stdin: str | None, expected: str | None, verdict: Any) -> None:
    reply = run(url, code, stdin)
    assert verl_result_status(reply, None, expected) == verdict, reply
    assert reply["compile_result"] is None
    assert set(reply) == {"status", "message", "compile_result", "run_result", "executor_pod_name", "files"}
    assert set(reply["run_result"]) == {"status", "execution_time", "return_code", "stdout", "stderr"}


def test_runtime_error_is_failed_with_return_code_and_traceback(url: str) -> None:
    reply = run(url, "print('before')\nraise ValueError('boom')\n")
    assert reply["status"] == "Failed"
    result = reply["run_result"]
    assert result["status"] == "Finished" and result["return_code"] == 1
    assert result["stdout"] == "before\n" and "ValueError: boom" in result["stderr"]


def test_signal_is_negative_return_code(url: str) -> None:
    reply = run(url, "import os\nos.kill(os.getpid(), 9)\n")
    assert reply["status"] == "Failed" and reply["run_result"]["return_code"] == -9


def test_time_limit_is_failed_not_sandbox_error(url: str) -> None:
    start = time.monotonic()
    reply = run(url, "import time\nprint('started', flush=True)\ntime.sleep(3600)\n", timeout=1)
    assert time.monotonic() - start < 30
    assert reply["status"] == "Failed"
    assert reply["run_result"]["status"] == "TimeLimitExceeded"
    assert reply["run_result"]["stdout"] == "started\n"
    assert verl_result_status(reply, None, None) == -3


def test_cpu_spin_hits_the_time_limit(url: str) -> None:
    reply = run(url, "while True:\n    pass\n", timeout=1)
    assert reply["status"] == "Failed" and reply["run_result"]["status"] == "TimeLimitExceeded"


def test_cpp_compiles_and_runs(url: str) -> None:
    reply = run(url, CPP_SUM, "40 2\n", language="cpp")
    assert reply["status"] == "Success", reply
    assert reply["compile_result"]["status"] == "Finished" and reply["compile_result"]["return_code"] == 0
    assert verl_result_status(reply, None, "42") is True
    assert verl_result_status(run(url, CPP_SUM.replace("a + b", "a * b"), "40 2\n", "cpp"), None, "42") is False


def test_cpp_compile_error_is_failed_with_compiler_messages(url: str) -> None:
    reply = run(url, "int main() { return undeclared; }\n", language="cpp")
    assert reply["status"] == "Failed" and reply["run_result"] is None
    assert reply["compile_result"]["return_code"] != 0
    assert "undeclared" in reply["compile_result"]["stderr"]
    assert verl_result_status(reply, None, None) == -4


def test_cpp_runtime_error_and_time_limit(url: str) -> None:
    crash = run(url, "#include <cstdlib>\nint main() { std::abort(); }\n", language="cpp")
    assert crash["status"] == "Failed" and crash["run_result"]["return_code"] == -6  # SIGABRT
    assert verl_result_status(crash, None, None) == -2
    spin = run(url, "int main() { volatile long i = 0; for (;;) ++i; }\n", language="cpp", timeout=1)
    assert spin["compile_result"]["return_code"] == 0
    assert verl_result_status(spin, None, None) == -3


def test_language_sandboxfusion_knows_but_rewardflow_does_not_run(url: str) -> None:
    reply = run(url, "package main\nfunc main() {}\n", language="go")
    assert reply["status"] == "SandboxError" and "not supported" in reply["message"]
    assert verl_result_status(reply, None, None) == -1


def test_unknown_language_is_422_as_in_sandboxfusion(url: str) -> None:
    response = requests.post(url, json={"code": "print(1)", "language": "cobol"}, timeout=10)
    assert response.status_code == 422
    assert any(d["loc"] == ["body", "language"] for d in response.json()["detail"])


def test_files_are_base64_next_to_the_program(url: str) -> None:
    import base64

    body = {
        "code": "import helper\nprint(open('data/x.txt').read(), helper.VALUE)\n",
        "language": "python",
        "files": {
            "data/x.txt": base64.b64encode(b"hello").decode(),
            "helper.py": base64.b64encode(b"VALUE = 7").decode(),
        },
    }
    reply = requests.post(url, json=body, timeout=30).json()
    assert reply["status"] == "Success", reply
    assert reply["run_result"]["stdout"] == "hello 7\n"
    bad = requests.post(url, json={**body, "files": {"x": "not base64!"}}, timeout=30).json()
    assert bad["status"] == "SandboxError" and "base64" in bad["message"]


def test_fetch_files_come_back_as_in_sandboxfusions_own_example(url: str) -> None:
    """The request and the reply of SandboxFusion's documented download example (docs/how-to/run-code/
    upload-download-files.mdx at 469de08): ``fetch_files: ['flag.txt']`` -> ``files: {'flag.txt': base64}``."""
    import base64

    code = 'open("flag.txt", "w").write("this is a secret")'
    body = {"code": code, "language": "python", "fetch_files": ["flag.txt"]}
    reply = requests.post(url, json=body, timeout=30).json()
    assert reply["status"] == "Success", reply
    assert reply["files"] == {"flag.txt": "dGhpcyBpcyBhIHNlY3JldA=="}  # the reply the example documents
    assert base64.b64decode(reply["files"]["flag.txt"]).decode() == "this is a secret"
    # a file that was not written is left out (as SandboxFusion does); one written by a C++ program comes back
    cpp = '#include <fstream>\nint main() { std::ofstream("out/r.txt") << 42; }\n'
    body = {"code": cpp, "language": "cpp", "fetch_files": ["out/r.txt", "nothing.txt"], "files": {}}
    body["files"]["out/keep"] = base64.b64encode(b"").decode()  # makes the directory the program writes into
    reply = requests.post(url, json=body, timeout=60).json()
    assert reply["status"] == "Success", reply
    assert reply["files"] == {"out/r.txt": base64.b64encode(b"42").decode()}
    # a path out of the program's directory is refused as SandboxFusion's infrastructure status, not ignored
    reply = requests.post(url, json={**body, "fetch_files": ["/etc/passwd"]}, timeout=60).json()
    assert reply["status"] == "SandboxError" and "relative" in reply["message"]
    # a run stopped by its time limit still returns what it wrote before (SandboxFusion fetches after a timeout too)
    slow = 'open("partial.txt", "w").write("step 1")\nimport time\ntime.sleep(60)'
    body = {"code": slow, "language": "python", "run_timeout": 3, "fetch_files": ["partial.txt"]}
    reply = requests.post(url, json=body, timeout=60).json()
    assert reply["status"] == "Failed" and reply["run_result"]["status"] == "TimeLimitExceeded", reply
    assert reply["files"] == {"partial.txt": base64.b64encode(b"step 1").decode()}


# Attacks from inside the program: each must fail inside the sandbox and come back as the program's failure.
ATTACKS = [
    "print(open('/etc/shadow').read())",
    "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
    "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)",
    "import os\nos.kill(os.getppid(), 9)\nimport time\ntime.sleep(0.5)\nraise SystemExit(3)",
    "open('{home}/rewardflow-run-code-pwned', 'w').write('x')",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_fail_inside_the_sandbox(url: str, attack: str) -> None:
    port = url.split(":")[2].split("/")[0]
    code = attack.format(port=port, home=str(Path.home()))
    reply = run(url, code)
    assert reply["status"] == "Failed", reply
    assert reply["run_result"]["return_code"] != 0
    assert not (Path.home() / "rewardflow-run-code-pwned").exists()
    # The server survived and still answers correctly.
    assert verl_result_status(run(url, SUM, "1 1\n"), None, "2") is True


def test_token_and_body_limit_guard_run_code(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml", "workers: 1\nrewards:\n  - reward: tests.server._service_rewards:row_id\n"
    )
    with Server(spec, "--max-body-mb", "0.01", env={"REWARDFLOW_TOKEN": "sesame"}) as server:
        body = {"code": "print(1)", "language": "python"}
        assert requests.post(server.url + "/run_code", json=body, timeout=30).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert requests.post(server.url + "/run_code", json=body, headers=wrong, timeout=30).status_code == 403
        auth = {"Authorization": "Bearer sesame"}
        reply = requests.post(server.url + "/run_code", json=body, headers=auth, timeout=30)
        assert reply.status_code == 200 and reply.json()["run_result"]["stdout"] == "1\n"
        big = {"code": "#" * 20000, "language": "python"}
        assert requests.post(server.url + "/run_code", json=big, headers=auth, timeout=30).status_code == 413
