#!/usr/bin/env python3
"""JSON checks for the e2e tests (python3 stdlib only; jq is not assumed).

  check.py last-commit EVENTS                highest committed epoch (0 if none)
  check.py has-event EVENTS TYPE             exit 0 iff an event of TYPE is logged
  check.py count EVENTS TYPE                 number of events of TYPE logged
  check.py field EVENTS TYPE FIELD           FIELD of the last event of TYPE
  check.py commit-digest EVENTS EPOCH        digest of the commit of EPOCH ("" if none)
  check.py last-acked STATS                  highest epoch the primary saw acked (0 if none)
  check.py join STATS EVENTS [--min-acked N] [--from EPOCH] [--require-stop]
        every acked stats epoch (>= EPOCH) has a commit event with the same
        digest; no commit event contradicts a stats digest; prints a summary;
        exit 1 with a FAIL reason otherwise
  check.py log-time-ms LOG REGEX             wall-clock ms of the last spdlog line matching REGEX
"""
import datetime
import json
import re
import sys


def read_json_lines(path):
    out = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    # A line being written right now; ignore a torn last line.
                    pass
    except FileNotFoundError:
        pass
    return out


def events(path, kind=None):
    return [e for e in read_json_lines(path) if kind is None or e.get("event") == kind]


def stats(path):
    return [s for s in read_json_lines(path) if not s.get("totals")]


def main(argv):
    cmd = argv[1]
    if cmd == "last-commit":
        print(max([e["epoch"] for e in events(argv[2], "commit")] or [0]))
    elif cmd == "has-event":
        return 0 if events(argv[2], argv[3]) else 1
    elif cmd == "count":
        print(len(events(argv[2], argv[3])))
    elif cmd == "field":
        evs = events(argv[2], argv[3])
        if not evs:
            return 1
        v = evs[-1].get(argv[4])
        print(json.dumps(v) if isinstance(v, bool) else v)
    elif cmd == "commit-digest":
        want = int(argv[3])
        d = [e["digest"] for e in events(argv[2], "commit") if e["epoch"] == want]
        print(d[-1] if d else "")
    elif cmd == "last-acked":
        print(max([s["epoch"] for s in stats(argv[2]) if s.get("acked")] or [0]))
    elif cmd == "join":
        return join(argv[2:])
    elif cmd == "log-time-ms":
        rx = re.compile(argv[3])
        ts = None
        with open(argv[2], errors="replace") as f:
            for line in f:
                if rx.search(line):
                    m = re.match(r"\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]?", line)
                    if m:
                        ts = m.group(1)
        if ts is None:
            return 1
        dt = datetime.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f")
        print(int(dt.timestamp() * 1000))  # spdlog prints local time
    else:
        print("unknown command " + cmd, file=sys.stderr)
        return 2
    return 0


def join(args):
    stats_path, events_path = args[0], args[1]
    min_acked, from_epoch, require_stop = 0, 0, False
    i = 2
    while i < len(args):
        if args[i] == "--min-acked":
            min_acked = int(args[i + 1]); i += 2
        elif args[i] == "--from":
            from_epoch = int(args[i + 1]); i += 2
        elif args[i] == "--require-stop":
            require_stop = True; i += 1
        else:
            print("FAIL: join: unknown option " + args[i]); return 2
    st = [s for s in stats(stats_path) if s["epoch"] >= from_epoch]
    commits = {}
    for e in events(events_path, "commit"):
        if e["epoch"] in commits and commits[e["epoch"]] != e["digest"]:
            print("FAIL: epoch %d committed twice with different digests" % e["epoch"])
            return 1
        commits[e["epoch"]] = e["digest"]
    problems = []
    acked = 0
    for s in st:
        c = commits.get(s["epoch"])
        if s.get("acked"):
            acked += 1
            if c is None:
                problems.append("epoch %d acked to the primary but no commit event on the backup" % s["epoch"])
            elif c != s["digest"]:
                problems.append("epoch %d: primary digest %s, backup commit digest %s"
                                % (s["epoch"], s["digest"], c))
        elif c is not None and c != s["digest"] and int(s["digest"], 16) != 0:
            problems.append("epoch %d (not acked): primary sent digest %s, backup committed %s"
                            % (s["epoch"], s["digest"], c))
    if acked < min_acked:
        problems.append("only %d acked epochs (want >= %d)" % (acked, min_acked))
    if require_stop:
        stops = events(events_path, "stop")
        if not stops:
            problems.append("no clean 'stop' event from the backup")
        elif stops[-1].get("digest") != commits.get(stops[-1].get("last_committed_epoch")):
            problems.append("stop event digest %s differs from the commit of epoch %s"
                            % (stops[-1].get("digest"), stops[-1].get("last_committed_epoch")))
        fo = events(events_path, "failover")
        if fo:
            problems.append("unexpected failover event: %s" % json.dumps(fo[-1]))
    print("join: %d stats epochs (from %d), %d acked, %d commits, %d matched digests"
          % (len(st), from_epoch, acked, len(commits),
             sum(1 for s in st if s.get("acked") and commits.get(s["epoch"]) == s["digest"])))
    for p in problems[:10]:
        print("FAIL: " + p)
    if len(problems) > 10:
        print("FAIL: ... and %d more" % (len(problems) - 10))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
