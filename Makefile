# ceemsnet: `make serve` runs the exporter, `make test` runs the tests.
# Both do all set-up first (`make setup`, idempotent). `make V=1` shows commands.

.DELETE_ON_ERROR:
.PHONY: setup serve test test-unit test-kernel test-vm repeat fuzz accuracy soak objs check-objs cli-docs bench bench-vm clean

ifeq ($(V),1)
Q :=
else
Q := @
endif

VENV      := .venv
PY        := $(VENV)/bin/python
CEEMSNET  := $(VENV)/bin/ceemsnet
LISTEN    ?= :9977
ARGS      ?=

# --- BPF objects -------------------------------------------------------
# Built with Debian's clang-19 and committed under bpf/objs/, so users need
# no compiler. Which objects exist, and each one's source, defines and
# target, comes from the catalogue in ceemsnet/planning/catalogue.py, one token per
# object: FILE:SOURCE:TARGET:DEFINE[,DEFINE...] (`python -m ceemsnet.planning.catalogue
# make-specs`). Names: <subsystem>-<hook family>-<first kernel>[-<arch>].
# -ffile-prefix-map keeps the checkout's absolute path out of .BTF.ext line info.
CLANG     ?= clang-19
STRIP     ?= llvm-strip-19
PYTHON    ?= $(firstword $(wildcard $(VENV)/bin/python) python3)
BPF_CFLAGS := -g -O2 -target bpf -Wall -Werror -ffile-prefix-map=$(CURDIR)=. -Ibpf/include -I/usr/include/$(shell gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
OBJDIR    := bpf/objs
# clang's .BTF string order depends on the -o path (seen with clang 19), so
# every object is compiled to the same scratch path and then moved: any
# OBJDIR, any checkout, same bytes.
SCRATCH   := .build/cc

# Quiet here: before `make setup` there may be no Python able to import the
# catalogue, and set-up must still run; `objs` reports the real error.
OBJ_SPECS := $(shell $(PYTHON) -m ceemsnet.planning.catalogue make-specs 2>/dev/null)
OBJS      := $(foreach s,$(OBJ_SPECS),$(OBJDIR)/$(word 1,$(subst :, ,$(s))))
BPF_DEPS  := $(wildcard bpf/include/*.h) ceemsnet/planning/catalogue.py Makefile
comma     := ,

objs: $(OBJS)
	$(Q)$(if $(OBJ_SPECS),true,$(PYTHON) -m ceemsnet.planning.catalogue make-specs >/dev/null; echo "no BPF objects: '$(PYTHON) -m ceemsnet.planning.catalogue make-specs' failed or printed nothing (run make setup)" >&2; false)

# $(call bpf_rule,FILE,SOURCE,TARGET,DEFINES): one object; the headers beside
# SOURCE count as its inputs too.
define bpf_rule
$(OBJDIR)/$(1): $(2) $(wildcard $(dir $(2))*.h) $(BPF_DEPS)
	@echo "  BPF  $$@"
	$(Q)mkdir -p $$(@D) $(SCRATCH)
	$(Q)$(CLANG) $(BPF_CFLAGS) -D__TARGET_ARCH_$(3) $(addprefix -D,$(subst $(comma), ,$(4))) \
		-I$(patsubst %/,%,$(dir $(2))) -c $(2) -o $(SCRATCH)/$(1)
	$(Q)$(STRIP) -g $(SCRATCH)/$(1) && mv $(SCRATCH)/$(1) $$@
endef
spec_field = $(word $(2),$(subst :, ,$(1)))
$(foreach s,$(OBJ_SPECS),$(eval $(call bpf_rule,$(call spec_field,$(s),1),$(call spec_field,$(s),2),$(call spec_field,$(s),3),$(call spec_field,$(s),4))))

# Rebuild every object into a scratch folder and compare with the committed ones.
check-objs:
	$(Q)rm -rf .build/objs && mkdir -p .build/objs
	$(Q)$(MAKE) --no-print-directory -B OBJDIR=.build/objs objs >/dev/null
	$(Q)for o in $(notdir $(OBJS)); do cmp -s .build/objs/$$o $(OBJDIR)/$$o || { echo "bpf/objs/$$o differs from a rebuild: run 'make objs' and commit" >&2; exit 1; }; done
	@echo "check-objs: $(words $(OBJS)) committed objects match a rebuild"

# --- set-up --------------------------------------------------------------
# package names only: each line's first word, not its '# programs:' note
APT_PACKAGES := $(shell sed -n 's/^\([a-z0-9][a-z0-9.+-]*\).*/\1/p' packaging/apt-packages.txt)

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: packaging/apt-packages.txt pyproject.toml
	$(Q)./packaging/setup.sh $(APT_PACKAGES)
	$(Q)touch $@

serve: setup
	$(CEEMSNET) serve --web.listen-address=$(LISTEN) $(ARGS)

# --- tests ---------------------------------------------------------------
PYTEST := $(VENV)/bin/pytest

# Everything: unit tests once on the host (test_objs_rebuild.py rebuilds
# bpf/objs and compares), kernel tests on the host, then the VM matrix
# (tests/vm/matrix.py): kernel tests in VMs booting other kernels, once per
# hook family.
test: setup
	$(Q)echo "== [host] unit and kernel tests ($$(uname -r))"
	$(Q)$(PYTEST) tests/unit tests/kernel -ra
	$(Q)echo "== [host] net counters in the hash layout (--net.slots=0: the hash twins of the -slots objects)"
	$(Q)$(PY) tests/vm/matrix.py guest host tracepoint:hash
	$(Q)$(MAKE) --no-print-directory test-vm

# tests/kernel inside VMs: the runs of tests/vm/matrix.py (`python3 tests/vm/matrix.py list`),
# one boot per kernel, the run's suite once per hook family. A failing run
# does not stop the others. Two VMs run at a time, one vCPU each (VM_JOBS=1
# for one at a time, its output streamed). VM_KERNELS="5.10 7" and
# VM_HOOKS=fexit narrow it.
test-vm: setup
	$(Q)$(PY) tests/vm/matrix.py run

# One-off failures: boot one run's kernel once and run TEST (pytest node ids) N times
# in one pass, a line per run, a failed run's output whole, a count at the end:
#   make repeat KERNEL=7 HOOK=fexit N=30 TEST=tests/kernel/test_continuity.py::test_upgrade_carries_the_counts_over
# KERNEL is a run of tests/vm/matrix.py (list) or host (the default); HOOK its pass
# (default the run's first); STOP=1 stops at the first failure.
KERNEL ?= host
N      ?= 30
repeat: setup
	$(Q)$(if $(TEST),true,echo "make repeat: say which tests, for example TEST=tests/kernel/test_net.py::test_exact_bytes_calls_errors_per_cgroup" >&2; false)
	$(Q)$(PY) tests/vm/matrix.py repeat $(KERNEL) $(TEST) -n $(N) $(if $(HOOK),--hook=$(HOOK)) $(if $(STOP),--stop)

# `make fuzz`: the fuzz tests in their long profile (docs/testing.md, Fuzzing): 20 times the examples
# `make test` runs (about 90,000), a new random sample each run; failing inputs are kept in
# .build/hypothesis and tried first next time. About 12 min on 2 vCPUs.
fuzz: setup
	$(Q)HYPOTHESIS_PROFILE=long $(PYTEST) tests/unit/test_fuzz_*.py -ra

# docs/accuracy.md: every ground-truth comparison the kernel tests made (tests/accuracy_table.py):
# the host's sessions in .build/accuracy, the VM runs' in .build/vm-logs/*.log; LOGS="a.log ..."
# adds saved outputs (with VM_JOBS=1 the VMs' records are only in the output).
accuracy: setup
	$(Q)$(PY) tests/accuracy_table.py $(LOGS)

# `make soak`: bench/soak.py for MINUTES minutes (default 30), not in CI; root (docs/testing.md, Soak):
# cgroups made and removed, scrapes, restarts, upgrades and SIGKILLs under a workload of known size;
# every total exact, RSS and map entries flat, or it exits 1
soak: setup
	$(Q)$(PY) bench/soak.py --minutes=$(or $(MINUTES),30) --report=.build/soak.md

test-unit: setup
	$(Q)$(PYTEST) tests/unit -ra

test-kernel: setup
	$(Q)$(PYTEST) tests/kernel -ra

# docs/cli.md: the command reference, generated from the argument parser
# (tests/unit/test_cli_docs.py fails when the two differ).
cli-docs: setup
	$(Q)$(PY) tests/unit/test_cli_docs.py

# --- benchmarks ------------------------------------------------------------
# `make bench`: every host benchmark with --rows, one table at the end
# (bench/table.py; rows protocol in bench/rows.py): each figure beside its
# baseline from the same run, the ratio and issue 16's target. Root; about
# ten minutes on a 2-vCPU machine. A script not in the checkout is skipped
# with a line saying so. BEFORE=REV adds the exporter's memory as of REV.
BEFORE ?=
BENCH_HOST ?= bench/scrape.py bench/scrape_http.py bench/memory.py$(if $(BEFORE),:--before=$(BEFORE)) bench/net_cost.py \
	bench/event_parts.py bench/uring_cost.py bench/fileio_cost.py:--what=aio bench/fileio_cost.py:--what=splice \
	bench/vfs_tp_cost.py bench/skb_cost.py bench/continuity_gap.py bench/prom_report.py:--hours=2
# `make bench-vm`: the per-event benchmarks of the fexit and kretprobe families,
# in the 6.1 and 6.12 VMs (one boot per kernel runs them all, under emulation:
# ratios only, absolute figures mean nothing there; fewer events and rounds
# than on the host, as emulation runs them many times slower). bench/rdma_cost.py needs the guests'
# rdma_rxe module and perftest (soft-RoCE: this machine's kernel has no modules).
# BENCH_VM_KERNELS=arm64-6.12: the same in the aarch64 guest, arm64's fexit beside its kretprobe
# (bench/table.py builds the empty programs here: that guest has no clang-19).
BENCH_VM_KERNELS ?= 6.1 6.12
BENCH_VM ?= bench/net_cost.py:"--hook=fexit --events=20000 --rounds=3" \
	bench/net_cost.py:"--hook=kretprobe --events=20000 --rounds=3" \
	bench/vfs_cost.py:"--hook=fexit --writes=20000 --rounds=3" \
	bench/vfs_cost.py:"--hook=kretprobe --writes=20000 --rounds=3" \
	bench/fileio_cost.py:"--what=open --family=fexit --count=5000 --rounds=3" \
	bench/fileio_cost.py:"--what=open --family=kretprobe --count=5000 --rounds=3" \
	bench/rdma_cost.py:"--family=fexit --iters=500 --rounds=3" \
	bench/rdma_cost.py:"--family=kretprobe --iters=500 --rounds=3" \
	bench/kretprobe_maxactive.py:--maxactive=0,64,1024

bench: setup
	$(Q)$(PY) bench/table.py $(BENCH_HOST)

bench-vm: setup
	$(Q)$(PY) bench/table.py $(addprefix --vm ,$(BENCH_VM_KERNELS)) $(BENCH_VM)

# --- Debian package --------------------------------------------------------
# dist/ceemsnet_<version>_<arch>.deb (packaging/deb/build.py, dpkg-deb): the
# package, the committed objects, the unit (not enabled), Debian's python3-*
# packages as dependencies. docs/install.md.
.PHONY: deb
deb:
	$(Q)$(PYTHON) packaging/deb/build.py dist

# dist/ceemsnet-<version>-1.noarch.rpm (packaging/rpm/build.py, rpmbuild from
# Debian's rpm): the .deb's files and unit at RHEL's paths, RHEL/EPEL Requires.
.PHONY: rpm
rpm:
	$(Q)$(PYTHON) packaging/rpm/build.py dist

clean:
	rm -rf .build
