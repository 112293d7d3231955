# batch_summary.py OUT: per binary of a batch.sh run, the median rate and CPU per message of each
# phase, and the reliable runs against their ceilings (64 sessions against ceiling512 and
# same512, 1 session against the 64-concurrent ones): median of the per-run ratios, runs >= 80 %,
# ratio of the medians, CPU ratio of the medians.
import re, sys, statistics as st, collections
cur=None; data=collections.OrderedDict()
pat={'c5':r"ceiling \(plain SOAP POST, no RM, 512 concurrent\): (\d+) msg/s.*CPU ([\d.]+)",
     's5':r"ceiling with wsrm's transport settings \(plain SOAP POST, no RM, 512 concurrent\): (\d+) msg/s.*CPU ([\d.]+)",
     'c':r"ceiling \(plain SOAP POST, no RM, 64 concurrent\): (\d+) msg/s.*CPU ([\d.]+)",
     's':r"ceiling with wsrm's transport settings \(plain SOAP POST, no RM, 64 concurrent\): (\d+) msg/s.*CPU ([\d.]+)",
     'one':r"reliable, 1 session, window 64: (\d+) msg/s.*CPU ([\d.]+) us",
     'many':r"reliable, 64 sessions, window 8: (\d+) msg/s.*CPU ([\d.]+) us"}
for line in open(sys.argv[1]):
    m=re.match(r"=== run (\d+) bin (\S+)", line)
    if m:
        cur=m.group(2); data.setdefault(cur,collections.defaultdict(list)); run=data[cur]; continue
    if cur is None: continue
    for k,p in pat.items():
        m=re.match(p,line)
        if m: data[cur][k].append((int(m.group(1)),float(m.group(2))))
for b,d in data.items():
    print(b)
    for k in d: print('  %-5s n=%d med rate %.0f  med cpu %.2f' % (k, len(d[k]), st.median(x[0] for x in d[k]), st.median(x[1] for x in d[k])))
    for rel,base in (('many','c5'),('many','s5'),('one','c'),('one','s')):
        n=min(len(d[rel]),len(d[base]))
        if n==0: continue
        r=[100*d[rel][i][0]/d[base][i][0] for i in range(n)]
        print('  %s/%s: median %.1f %%, >=80: %d/%d, ratio of medians %.1f %%, cpu ratio of medians %.2f' % (rel, base, st.median(r), sum(x>=80 for x in r), n, 100*st.median(x[0] for x in d[rel])/st.median(x[0] for x in d[base]), st.median(x[1] for x in d[rel])/st.median(x[1] for x in d[base])))
