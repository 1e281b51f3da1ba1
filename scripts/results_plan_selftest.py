"""Self-test of the results plan's runner (scripts/test.sh runs it through
`results_fashion_mnist.py --self-test`): a job's lock outlives the plan that started it,
a second plan waits for it instead of running it twice, and a deadline keeps jobs that
would not finish from starting."""
import os
import subprocess
import sys
import tempfile
import time


def run():
    with tempfile.TemporaryDirectory() as out:
        os.environ["OUT"] = out
        os.environ.pop("UNTIL", None)
        os.environ["ARCHIVE"] = ""  # never the repository's archive
        import results_fashion_mnist as plan

        plan.OUT, plan.JOBS, plan.ARCHIVE = out, 2, ""
        os.makedirs(f"{out}/logs")

        def job(name, seconds, inputs=(), sleep=0.0):
            output = f"{out}/{name}.done"
            cmd = [sys.executable, "-c",
                   f"import time; print('ran'); time.sleep({sleep}); open({output!r}, 'w')"]
            return plan.Job(name, name, cmd, [output], [f"{out}/{i}.done" for i in inputs], seconds)

        # A job started by "another plan": it holds its log's lock until it exits.
        slow = job("slow", 1, sleep=1.5)
        held = plan.claim(slow)
        assert held is not None
        other = subprocess.Popen(slow.cmd, stdout=held)
        held.close()  # the other plan is gone; its job keeps the lock
        assert plan.claim(slow) is None, "the job's lock outlives the plan that started it"

        # This plan (one job at a time) waits for it, runs what depends on it, and never
        # runs it itself; the held job takes the one slot, so a free job waits too.
        plan.JOBS = 1
        after, free = job("after", 1, inputs=["slow"]), job("free", 1)
        started = time.time()
        assert plan.run([slow, after, free]), "all end done"
        other.wait()
        assert os.path.exists(f"{out}/after.done")
        assert time.time() - started >= 1.0, "it waited for the other process's job"
        assert os.path.getmtime(f"{out}/free.done") >= os.path.getmtime(f"{out}/slow.done"), \
            "another process's job counts against JOBS"
        plan.JOBS = 2
        assert open(slow.log).read().count("ran") == 1, "the held job ran once, not twice"

        # A deadline 60 s away: a 10-minute job does not start, a 1-second one does.
        with open(f"{out}/until", "w") as f:
            f.write(str(time.time() + 60))
        short, long_ = job("short", 1), job("long", 600)
        assert plan.run([long_, short])
        assert os.path.exists(f"{out}/short.done") and not os.path.exists(f"{out}/long.done")
        assert plan.fits(long_, None) and not plan.fits(long_, time.time() + 60)
        with open(f"{out}/until", "w") as f:
            f.write("00:00")
        assert 0 < plan.deadline() - time.time() <= 86400, "HH:MM is the next such time"
    print("results plan self-test: held jobs waited for, deadline kept")
