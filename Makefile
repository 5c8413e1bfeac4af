# ceemsnet: `make serve` runs the exporter, `make test` runs the tests.
# Both do all set-up first (`make setup`, idempotent). `make V=1` shows commands.

.DELETE_ON_ERROR:
.PHONY: setup serve test test-unit test-kernel test-vm objs check-objs bench clean

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
# no compiler. -ffile-prefix-map keeps the checkout's absolute path out of
# .BTF.ext line info. Names: <subsystem>-<hook family>-<first kernel of the era>[-<arch>].
CLANG     ?= clang-19
STRIP     ?= llvm-strip-19
BPF_CFLAGS := -g -O2 -target bpf -Wall -Werror -ffile-prefix-map=$(CURDIR)=. -Ibpf/include -I/usr/include/$(shell gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
OBJDIR    := bpf/objs
# clang's .BTF string order depends on the -o path (seen with clang 19), so
# every object is compiled to the same scratch path and then moved: any
# OBJDIR, any checkout, same bytes.
SCRATCH   := .build/cc

NET_OBJS := \
	$(OBJDIR)/net-fexit-5.5-x86.bpf.o \
	$(OBJDIR)/net-fexit-5.19-x86.bpf.o \
	$(OBJDIR)/net-fexit-7.1-x86.bpf.o \
	$(OBJDIR)/net-kretprobe-4.18-x86.bpf.o \
	$(OBJDIR)/net-kretprobe-5.19-x86.bpf.o \
	$(OBJDIR)/net-kretprobe-4.18-arm64.bpf.o \
	$(OBJDIR)/net-kretprobe-5.19-arm64.bpf.o \
	$(OBJDIR)/net-tracepoint-6.3.bpf.o

VFS_OBJS := \
	$(OBJDIR)/vfs-fexit-5.5-x86.bpf.o \
	$(OBJDIR)/vfs-fexit-5.12-x86.bpf.o \
	$(OBJDIR)/vfs-fexit-6.3-x86.bpf.o \
	$(OBJDIR)/vfs-fexit-6.15-x86.bpf.o \
	$(OBJDIR)/vfs-kretprobe-4.18-x86.bpf.o \
	$(OBJDIR)/vfs-kretprobe-5.12-x86.bpf.o \
	$(OBJDIR)/vfs-kretprobe-6.15-x86.bpf.o \
	$(OBJDIR)/vfs-kretprobe-4.18-arm64.bpf.o \
	$(OBJDIR)/vfs-kretprobe-5.12-arm64.bpf.o \
	$(OBJDIR)/vfs-kretprobe-6.15-arm64.bpf.o \
	$(OBJDIR)/vfs-tracepoint-5.5-x86.bpf.o

SKB_OBJS := $(OBJDIR)/skb-root.bpf.o $(OBJDIR)/skb-cgroup.bpf.o

OBJS := $(NET_OBJS) $(VFS_OBJS) $(SKB_OBJS)
COMMON_SRC := bpf/include/ceemsnet.h bpf/include/cgroup.h bpf/include/arch.h bpf/include/vmlinux.h
NET_SRC := bpf/net/net.bpf.c bpf/net/net.h $(COMMON_SRC)
VFS_SRC := bpf/vfs/vfs.bpf.c bpf/vfs/vfs.h $(COMMON_SRC)
SKB_SRC := bpf/net/skb.bpf.c bpf/net/skb.h $(COMMON_SRC)

# era (first kernel) -> RECVMSG_ERA, see bpf/net/net.bpf.c
era_5.5  := 1
era_4.18 := 1
era_5.19 := 2
era_7.1  := 3
era_6.3  := 0
# era (first kernel) -> VFS_ERA, see bpf/vfs/vfs.bpf.c
vfs_era_4.18 := 1
vfs_era_5.5  := 1
vfs_era_5.12 := 2
vfs_era_6.3  := 3
vfs_era_6.15 := 4
arch_x86   := x86
arch_arm64 := arm64

objs: $(OBJS)

# $(call net_rule,family,era,arch): one object of the net source.
define net_rule
$(OBJDIR)/net-$(1)-$(2)$(if $(3),-$(3)).bpf.o: $(NET_SRC) Makefile
	@echo "  BPF  $$@"
	$(Q)mkdir -p $$(@D) $(SCRATCH)
	$(Q)$(CLANG) $(BPF_CFLAGS) -D__TARGET_ARCH_$(if $(3),$(3),x86) -DCEEMSNET_HOOK_$(shell echo $(1) | tr a-z A-Z) \
		-DRECVMSG_ERA=$(era_$(2)) -Ibpf/net -c bpf/net/net.bpf.c -o $(SCRATCH)/$$(@F)
	$(Q)$(STRIP) -g $(SCRATCH)/$$(@F) && mv $(SCRATCH)/$$(@F) $$@
endef
$(eval $(call net_rule,fexit,5.5,x86))
$(eval $(call net_rule,fexit,5.19,x86))
$(eval $(call net_rule,fexit,7.1,x86))
$(eval $(call net_rule,kretprobe,4.18,x86))
$(eval $(call net_rule,kretprobe,5.19,x86))
$(eval $(call net_rule,kretprobe,4.18,arm64))
$(eval $(call net_rule,kretprobe,5.19,arm64))
$(eval $(call net_rule,tracepoint,6.3,))

# $(call vfs_rule,family,era,arch): one object of the vfs source.
define vfs_rule
$(OBJDIR)/vfs-$(1)-$(2)-$(3).bpf.o: $(VFS_SRC) Makefile
	@echo "  BPF  $$@"
	$(Q)mkdir -p $$(@D) $(SCRATCH)
	$(Q)$(CLANG) $(BPF_CFLAGS) -D__TARGET_ARCH_$(3) -DCEEMSNET_HOOK_$(shell echo $(1) | tr a-z A-Z) \
		-DVFS_ERA=$(vfs_era_$(2)) -Ibpf/vfs -c bpf/vfs/vfs.bpf.c -o $(SCRATCH)/$$(@F)
	$(Q)$(STRIP) -g $(SCRATCH)/$$(@F) && mv $(SCRATCH)/$$(@F) $$@
endef
$(foreach e,5.5 5.12 6.3 6.15,$(eval $(call vfs_rule,fexit,$(e),x86)))
$(foreach a,x86 arm64,$(foreach e,4.18 5.12 6.15,$(eval $(call vfs_rule,kretprobe,$(e),$(a)))))
$(eval $(call vfs_rule,tracepoint,5.5,x86))

# cgroup_skb backend: root mode (hash) and per-cgroup mode (cgroup storage)
$(OBJDIR)/skb-root.bpf.o: $(SKB_SRC) Makefile
	@echo "  BPF  $@"
	$(Q)mkdir -p $(@D) $(SCRATCH)
	$(Q)$(CLANG) $(BPF_CFLAGS) -D__TARGET_ARCH_x86 -DCEEMSNET_SKB_ROOT -Ibpf/net -c bpf/net/skb.bpf.c -o $(SCRATCH)/$(@F)
	$(Q)$(STRIP) -g $(SCRATCH)/$(@F) && mv $(SCRATCH)/$(@F) $@
$(OBJDIR)/skb-cgroup.bpf.o: $(SKB_SRC) Makefile
	@echo "  BPF  $@"
	$(Q)mkdir -p $(@D) $(SCRATCH)
	$(Q)$(CLANG) $(BPF_CFLAGS) -D__TARGET_ARCH_x86 -DCEEMSNET_SKB_STORAGE -Ibpf/net -c bpf/net/skb.bpf.c -o $(SCRATCH)/$(@F)
	$(Q)$(STRIP) -g $(SCRATCH)/$(@F) && mv $(SCRATCH)/$(@F) $@

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
# bpf/objs and compares), kernel tests on the host, then the kernel tests in
# VMs booting Debian's 6.1 and 6.12 kernels, once per hook family.
test: setup
	$(Q)echo "== [host] unit and kernel tests ($$(uname -r))"
	$(Q)$(PYTEST) tests/unit tests/kernel -ra
	$(Q)$(MAKE) --no-print-directory test-vm

# tests/kernel inside VMs: $(VM_KERNELS) x $(VM_HOOKS), about two minutes each
# under software emulation. A failing run does not stop the others.
VM_KERNELS ?= 6.1 6.12
VM_HOOKS   ?= fexit kretprobe
VM_PYTEST  := env PYTHONDONTWRITEBYTECODE=1 .venv/bin/python -m pytest -p no:cacheprovider tests/kernel -ra

test-vm: setup
	$(Q)fail=0; n=0; total=$$(( $(words $(VM_KERNELS)) * $(words $(VM_HOOKS)) )); \
	for k in $(VM_KERNELS); do for h in $(VM_HOOKS); do n=$$((n+1)); \
		echo "== [vm $$n/$$total] Debian $$k kernel, --hook=$$h (booting under emulation, about two minutes)"; \
		start=$$(date +%s); \
		tests/vm/run.sh $$k env CEEMSNET_VM=$$k CEEMSNET_TEST_HOOK=$$h $(VM_PYTEST) || { fail=1; echo "== [vm $$n/$$total] FAILED: $$k --hook=$$h"; }; \
		echo "== [vm $$n/$$total] done in $$(( $$(date +%s) - start )) s"; \
	done; done; exit $$fail

test-unit: setup
	$(Q)$(PYTEST) tests/unit -ra

test-kernel: setup
	$(Q)$(PYTEST) tests/kernel -ra

bench: setup
	$(Q)$(PY) bench/scrape.py

clean:
	rm -rf .build
