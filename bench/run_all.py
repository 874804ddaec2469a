"""Run every benchmark in turn (``make bench``); each rewrites its own section of
docs/benchmarks.md. Run them on an otherwise idle machine: they measure CPU and
latency, and other load shows up in their figures (each reports the load it saw)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_codecs.py", "bench_b2bua.py", "bench_conference.py", "bench_console.py"]


def main() -> int:
    failed = []
    for name in BENCHES:
        script = HERE / name
        if not script.exists():
            continue
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
