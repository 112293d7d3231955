# usersys_summary.py OUT N: medians per phase of rate, the bench's CPU per message, and user and
# system µs per message; then the 64-session run against each other phase, run by run.
import sys, statistics as st, collections
n = float(sys.argv[2]); d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t = line.split()
    # "ROUND PHASE RESULT rate cpu ... TIME user sys wall" (usersys.sh); a round whose bench
    # printed no RESULT or /usr/bin/time no TIME is skipped.
    if len(t) < 5 or t[2] != 'RESULT' or 'TIME' not in t or len(t) < t.index('TIME') + 3: continue
    r, p, i = int(t[0]), t[1], t.index('TIME')
    rate, cpu = float(t[3]), float(t[4]); u, s = float(t[i + 1]), float(t[i + 2])
    d[p].append((r, rate, cpu, u / n * 1e6, s / n * 1e6))
for p, v in d.items():
    print('%-11s runs %2d  rate %8.0f  cpu %5.2f  user %5.2f  sys %5.2f' % (p, len(v), st.median(x[1] for x in v), st.median(x[2] for x in v), st.median(x[3] for x in v), st.median(x[4] for x in v)))
ph = list(d)
if 'many' in d:
    for c in [x for x in ph if x != 'many']:
        by = {x[0]: x for x in d[c]}
        rat = [(m[1] / by[m[0]][1], m[3] / by[m[0]][3], m[4] / by[m[0]][4]) for m in d['many'] if m[0] in by]
        print('many / %-10s rate ratio median %.3f (>=0.8 in %d/%d)  user ratio %.2f  sys ratio %.2f' % (c, st.median(x[0] for x in rat), sum(x[0] >= 0.8 for x in rat), len(rat), st.median(x[1] for x in rat), st.median(x[2] for x in rat)))
