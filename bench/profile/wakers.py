#!/usr/bin/env python3
"""Aggregate `perf script` output of sched:sched_wakeup events with call graphs:
who (waker thread, key frames) wakes whom (wakee comm). Usage: wakers.py wk.txt [deletions]"""
import re, sys, collections
GENERIC = re.compile(r'^(tokio::runtime|tokio::loom|parking_lot|std::|core::|alloc::|<core::|<alloc::|<std::|syscall|__|futex|pthread|\[unknown\]|<tokio::runtime|tokio::runtime::park|tokio::sync::notify::Notify::notify_waiters)')
INTEREST = ('session_reaper', 'sqlx', 'flume', 'tracing_appender', 'crossbeam', 'governor', 'futures_timer', 'hyper', 'reqwest', 'tokio::time', 'tokio::sync', 'tokio::net', 'mio', 'tracing_subscriber', 'tokio::task', 'tokio::io')
events = collections.Counter()
wakee_total = collections.Counter()
def flush(head, frames, keep_user=False):
    """Counts one wake-up: by (waker, wakee, key), and with keep_user also its user frames."""
    if not head: return
    m = re.match(r'\s*(\S.*?)\s+(\d+)\s+\[\d+\].*comm=(\S+) pid=(\d+)', head)
    if not m: return
    waker, wakee = m.group(1), m.group(3)
    user = [f for f in frames if 'kallsyms' not in f]
    kern = [f for f in frames if 'kallsyms' in f]
    key = []
    for f in user:
        if any(f.startswith(p) or ('<'+p) in f[:60] for p in INTEREST) or 'session_reaper' in f:
            key.append(re.sub(r'\{\{closure\}\}', '', f)[:110])
        if len(key) >= 1: break
    sr = [f for f in user if f.startswith('session_reaper::') or f.startswith('<session_reaper')]
    if sr and sr[0][:110] not in ' '.join(key):
        key.append(re.sub(r'\{\{closure\}\}', '', sr[0])[:90])
    if len(sr) > 1:
        key.append(re.sub(r'\{\{closure\}\}', '', sr[1])[:70])
    if not user:
        # kernel-only: timer interrupt, softirq
        k = next((f for f in kern if 'hrtimer_wakeup' in f or 'tcp' in f or 'sock' in f or 'ep_' in f), kern[2] if len(kern) > 2 else '?')
        key = ['[kernel] ' + k]
    name = ' <- '.join(key) or (user[0][:100] if user else '?')
    events[(waker, wakee, name, tuple(user)) if keep_user else (waker, wakee, name)] += 1
    wakee_total[wakee] += 1

def read(path, keep_user=False):
    """Reads `perf script` output into `events` and `wakee_total`."""
    head, frames = None, []
    for line in open(path, errors='replace'):
        if not line.strip():
            flush(head, frames, keep_user); head, frames = None, []
        elif not line.startswith('\t') and not line.startswith(' ' * 8):
            flush(head, frames, keep_user); head, frames = line, []
        else:
            parts = line.strip().split(' ', 1)
            if len(parts) == 2:
                sym = parts[1].rsplit(' (', 1)
                frames.append(sym[0] + (' kallsyms' if len(sym) > 1 and 'kallsyms' in sym[1] else ''))
    flush(head, frames, keep_user)

if __name__ == '__main__':
    read(sys.argv[1])
    n = float(sys.argv[2]) if len(sys.argv) > 2 else 1
    total = sum(events.values())
    print(f'total wakeups {total} ({total/n:.2f} per deletion)')
    print('by wakee:', ', '.join(f'{k} {v} ({v/n:.2f})' for k, v in wakee_total.most_common()))
    for (waker, wakee, key), c in events.most_common(40):
        print(f'{c:7d} {c/n:6.2f}  {waker[:15]:15} -> {wakee[:15]:15}  {key}')
