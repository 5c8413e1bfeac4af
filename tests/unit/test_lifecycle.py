from ceemsnet.attribution.lifecycle import Lifecycle


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_gone_cgroups_fold_delete_and_expire():
    alive = {1: True, 2: True}
    clock = Clock()
    life = Lifecycle("/unused", retention=10, clock=clock, alive=lambda cid, path: alive.get(cid, False))
    deleted = []
    paths = {1: "/job_1/step_0", 2: "/job_1/step_1"}
    stats = {(1, 0, 0, 0): (100, 1, 0), (1, 1, 0, 0): (5, 1, 0), (2, 0, 0, 0): (7, 1, 0)}
    out, _ = life.process(dict(stats), paths, lambda k: deleted.append(k) or True)
    assert out == stats and not deleted
    alive[1] = False  # step_0 removed
    clock.t = 1
    out, p = life.process(dict(stats), paths, lambda k: deleted.append(k) or True)
    assert sorted(deleted) == [(1, 0, 0, 0), (1, 1, 0, 0)] and life.deleted == 2
    retired = {k: v for k, v in out.items() if k[0] < 0}
    assert {(p[k[0]],) + k[1:]: v for k, v in retired.items()} == {("/job_1/step_0", 0, 0, 0): (100, 1, 0),
                                                                     ("/job_1/step_0", 1, 0, 0): (5, 1, 0)}
    # the keys are gone from the map: later reads no longer have them, the totals stay
    later = {(2, 0, 0, 0): (9, 2, 0)}
    clock.t = 5
    out, p = life.process(dict(later), paths, lambda k: True)
    assert {(p[k[0]],) + k[1:]: v for k, v in out.items() if k[0] < 0} == {
        ("/job_1/step_0", 0, 0, 0): (100, 1, 0), ("/job_1/step_0", 1, 0, 0): (5, 1, 0)}
    assert out[(2, 0, 0, 0)] == (9, 2, 0)
    clock.t = 12  # retention over: step_0's series go, step_1 stays
    out, p = life.process(dict(later), paths, lambda k: True)
    assert out == later


def test_a_path_taken_by_a_new_cgroup_keeps_summing():
    clock = Clock()
    alive = {1: False, 3: True}
    life = Lifecycle("/unused", retention=10, clock=clock, alive=lambda cid, path: alive[cid])
    out, p = life.process({(1, 0): (50,)}, {1: "/job"}, lambda k: True)
    out, p = life.process({(3, 0): (7,)}, {3: "/job"}, lambda k: True)
    assert sum(v[0] for k, v in out.items() if p[k[0]] == "/job") == 57
    clock.t = 100  # the path is live again: its retired counts are not dropped
    out, p = life.process({(3, 0): (8,)}, {3: "/job"}, lambda k: True)
    assert sum(v[0] for k, v in out.items() if p[k[0]] == "/job") == 58


def test_a_jobs_removed_steps_stay_while_the_job_lives():
    clock = Clock()
    alive = {1: False, 2: True}
    unit = {"/job_1/step_0": "1", "/job_1/step_1": "1"}.get
    life = Lifecycle("/unused", retention=10, clock=clock, alive=lambda c, p: alive[c], unit_of=unit)
    paths = {1: "/job_1/step_0", 2: "/job_1/step_1"}
    life.process({(1, 0): (50,), (2, 0): (5,)}, paths, lambda k: True)
    clock.t = 100  # long past retention, but step_1 of the same job is alive
    out, p = life.process({(2, 0): (6,)}, paths, lambda k: True)
    assert sorted((p[k[0]], v) for k, v in out.items()) == [("/job_1/step_0", (50,)), ("/job_1/step_1", (6,))]
    alive[2] = False  # the job's last cgroup goes: both expire after retention
    life.process({(2, 0): (6,)}, paths, lambda k: True)
    clock.t = 200
    assert life.process({}, paths, lambda k: True)[0] == {}


class MemLedger:
    """The ledger's contract (ceemsnet/pinned/ledger.py) in memory: what a restart finds."""

    def __init__(self):
        self.retired, self.paths = {}, {}
        self.pending, self.settled = set(), False

    def load(self):
        self.settled = False
        return {rk: list(v) for rk, v in self.retired.items()}

    def settle(self, present, ids, delete):
        self.settled = True
        return 0

    def path_of(self, cid):
        return self.paths.get(cid)

    def record(self, paths):
        self.paths.update({c: p for c, p in paths.items() if p.startswith("/")})

    def retire(self, folded, delete):
        for _, rk, total in folded:
            self.retired[rk] = total
        return sum(1 for key, _, _ in folded if delete(key))

    def forget(self, cid):
        self.paths.pop(cid, None)

    def drop(self, path, rks):
        for rk in rks:
            del self.retired[rk]


def test_a_restart_finds_retired_totals_and_names_ids_removed_meanwhile():
    clock, ledger = Clock(), MemLedger()
    alive = {1: True, 2: True}
    life = Lifecycle("/unused", retention=10, clock=clock, alive=lambda c, p: alive[c], ledger=ledger)
    life.process({(1, 0): (50,), (2, 0): (5,)}, {1: "/a", 2: "/b"}, lambda k: True)
    alive[1] = False
    life.process({(1, 0): (50,), (2, 0): (6,)}, {1: "/a", 2: "/b"}, lambda k: True)  # /a retired
    # the exporter stops; /b counts on and is removed; a new exporter adopts the maps
    alive[2] = False
    life = Lifecycle("/unused", retention=10, clock=clock, alive=lambda c, p: alive[c], ledger=ledger)
    out, p = life.process({(2, 0): (9,)}, {2: "unknown:2"}, lambda k: True)
    assert sorted((p[k[0]], v) for k, v in out.items()) == [("/a", (50,)), ("/b", (9,))]
    clock.t = 20  # retention over: both expire, from the ledger too
    assert life.process({}, {}, lambda k: True)[0] == {} and ledger.retired == {}
