"""The backbone: random edits, drift, faults and crashes, then convergence.

A ``RuleBasedStateMachine`` drives one real engine over one simulated cloud.
Its model is small: the last spec applied and the public ports clients were
told. Whatever happened in between, a clean sync must leave the cloud equal
to the expansion of the last spec: nothing missing, duplicated or orphaned,
no address held twice, no port moved, and the cloud never refused an action
for ordering reasons.
"""

from __future__ import annotations

from harness import World, examples
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from strategies import FLAVORS, IMAGES, cloudlets, edits

from cloudlet.model.resources import Observed
from cloudlet.model.spec import Cloudlet

#: Kinds an operator deletes behind the engine's back. A subnet's holders
#: (ports, VIPs) must come back on a fresh address of its new pool.
DRIFT_DELETABLE = ("vm", "lb-listener", "k8s-node", "floating-ip", "subnet", "port", "vip")


class CloudletMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.spec: Cloudlet | None = None
        self.told: dict[tuple[str, str, str, int], int] = {}

    @initialize(spec=cloudlets())
    def first_sync(self, spec: Cloudlet) -> None:
        self.spec = spec
        self.converge()

    def converge(self) -> None:
        assert self.spec is not None
        report = self.world.sync(self.spec)
        assert report.converged, report.message
        self.world.assert_converged_to(self.spec)
        self.check_ports()

    def check_ports(self) -> None:
        assert self.spec is not None
        shared = {lb.name for lb in self.spec.spec.load_balancers if lb.type == "shared"}
        now = {m.key: m.public_port for m in self.world.repo.get_ports(self.spec.name)}
        for key, public in now.items():
            if key in self.told and key[0] in shared:
                assert self.told[key] == public, f"public port of {key} moved"
        self.told = {k: v for k, v in now.items() if k[0] in shared}

    @rule(data=st.data())
    def edit_spec(self, data: st.DataObject) -> None:
        assert self.spec is not None
        self.spec = data.draw(edits(self.spec))
        self.converge()

    def tagged(self) -> list[Observed]:
        """In id order: cloud uids differ between replays, ids do not."""
        assert self.spec is not None
        objs = self.world.cloud.cloud.list_objects(self.spec.name)
        return sorted((o for o in objs if o.id), key=lambda o: (str(o.id), o.uid))

    @rule(data=st.data())
    def drift_delete(self, data: st.DataObject) -> None:
        assert self.spec is not None
        objs = [o for o in self.tagged() if o.kind in DRIFT_DELETABLE]
        if objs:
            victim = data.draw(st.sampled_from(objs))
            self.world.cloud.cloud.remove(self.spec.name, victim.uid)

    @rule(data=st.data())
    def drift_change(self, data: st.DataObject) -> None:
        assert self.spec is not None
        vms = [o for o in self.tagged() if o.kind == "vm"]
        if vms:
            vm = data.draw(st.sampled_from(vms))
            key = data.draw(st.sampled_from(["image", "flavor"]))
            value = data.draw(st.sampled_from(IMAGES if key == "image" else FLAVORS))
            self.world.cloud.cloud.set_attr(self.spec.name, vm.uid, key, value)

    @rule(data=st.data(), rate=st.sampled_from([0.2, 0.5]), seed=st.integers(0, 10**6))
    def sync_under_faults(self, data: st.DataObject, rate: float, seed: int) -> None:
        """Transient faults (before or after the cloud acted); may fail, never corrupts."""
        assert self.spec is not None
        self.spec = data.draw(edits(self.spec))
        self.world.sync(self.spec, self.world.faulty(rate, seed), parallelism=1)
        self.check_ports()  # allocations are stored before any provider call

    @rule(data=st.data(), after=st.integers(1, 40), during=st.booleans())
    def crash_mid_sync(self, data: st.DataObject, after: int, during: bool) -> None:
        """A process dies between or during provider calls, after an edit."""
        assert self.spec is not None
        self.spec = data.draw(edits(self.spec))
        self.world.crash_sync(self.spec, after, during)
        self.check_ports()

    @rule()
    def clean_sync(self) -> None:
        self.converge()

    @invariant()
    def cloud_never_refused_for_ordering(self) -> None:
        assert self.world.cloud.cloud.violations() == []

    def teardown(self) -> None:
        try:
            if self.spec is not None:
                self.converge()
        finally:
            self.world.close()


CloudletMachine.TestCase.settings = settings(
    max_examples=examples(60),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestCloudletMachine = CloudletMachine.TestCase
