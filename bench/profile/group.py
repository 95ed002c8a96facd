import sys, re, collections
"""Group the wake-ups of `perf script` output (sched:sched_wakeup with call graphs) by cause.
Usage: group.py wk.txt DELETIONS"""
sys.path.insert(0, __import__('os').path.dirname(__file__))
from wakers import events, read
read(sys.argv[1], keep_user=True)
n=float(sys.argv[2]); g=collections.Counter()
for (waker, wakee, key, user), c in events.items():
    u=' '.join(user)
    if waker.startswith('tokio-rt') and wakee.startswith('sqlx'):
        k = 'to SQLite: recheck (Deleter::delete)' if 'deletion::Deleter' in u else 'to SQLite: outcome writes' if 'write_outcomes' in u else 'to SQLite: claims' if 'claim_once' in u or 'Feeder' in u else 'to SQLite: other/unattributed'
    elif waker.startswith('sqlx'): k='SQLite thread back to the runtime'
    elif 'futures-timer' in (waker+wakee) or 'futures_timer' in u: k='limiter (futures-timer)'
    elif wakee.startswith('tracing-appende') or wakee.startswith('log-writer'): k='log line thread'
    elif waker.startswith('tokio-rt') and wakee.startswith('tokio-rt'):
        k = 'runtime->runtime: hyper/TCP' if ('hyper' in u or 'TcpStream' in u) else 'runtime->runtime: other (unpark)'
    elif waker.startswith('tokio-rt'): k='runtime -> other processes (stand-in etc.)'
    else: k='other'
    g[k]+=c
for k,c in sorted(g.items(), key=lambda x:-x[1]): print(f'{c/n:6.2f}  {k}')
print(f'{sum(g.values())/n:6.2f}  total')
