"""The heaviest frames of a py-spy raw (collapsed) profile, by process kind: what
bench/device/run.sh's BENCH_DEVICE_PROFILE records, read here or on the device.

    python bench/device/stacks.py profile.txt [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import re

SOURCE = re.compile(r" \((?:.*?/)?(?:src/|site-packages/|lib/python3\.\d+/)?([^/()]+/[^()]*?)\)")


# A process's kind, from the modules its stacks pass through (children are forks of the
# supervisor, so every stack of theirs has the supervisor's frames too).
KINDS = (("delivery", "queue/delivery.py"), ("smtp", "protocols/smtpd.py"),
         ("imap", "protocols/imapd.py"), ("pop3", "protocols/pop3d.py"),
         ("ratekeeper", "ratekeeper/"))


def kind_of(stacks: list[str]) -> str:
    text = "\n".join(stacks)
    return next((kind for kind, module in KINDS if module in text), "supervisor")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    opts = ap.parse_args()
    by_process = collections.defaultdict(list)
    with open(opts.profile) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if count.isdigit():
                # --subprocesses nests each child's frames under its parents' "process" frames.
                frames = stack.split(";")
                last = max(i for i, frame in enumerate(frames) if frame.startswith("process "))
                by_process[frames[last].split(":")[0]].append((";".join(frames[last + 1:]),
                                                               int(count)))
    own = collections.defaultdict(collections.Counter)
    inclusive = collections.defaultdict(collections.Counter)
    totals = collections.Counter()
    for samples in by_process.values():
        samples = [(stack, count) for stack, count in samples if stack]
        kind = kind_of([stack for stack, _ in samples])
        for stack, count in samples:
            frames = [SOURCE.sub(r" (\1)", f) for f in stack.split(";")]
            totals[kind] += count
            own[kind][frames[-1]] += count
            for frame in set(frames):
                inclusive[kind][frame] += count
    for kind, total in totals.most_common():
        print(f"== {kind}: {total} samples")
        for title, table in (("own", own[kind]), ("inclusive", inclusive[kind])):
            print(f"-- {title}")
            for frame, count in table.most_common(opts.top):
                print(f"{100 * count / total:5.1f}% {frame[:150]}")


if __name__ == "__main__":
    main()
