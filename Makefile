# virtio-lab: `make demo` brings up the default lab, `make test` runs every test.
# Both work on a fresh Debian 12 host as root: they install what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB ?= inventory/demo.yml
COLLECTION := playbooks/collections/ansible_collections/virtio_lab/lab
# What pip needs to build libvirt-python; `provision host prepare` installs the rest.
BOOTSTRAP_PKGS := libvirt-dev pkg-config gcc python3-dev python3-venv
# What only the tests use: headless Chromium opens `verify --html` pages (tests/chromium_page.py).
TEST_PKGS := chromium

# $(call apt_missing,PACKAGES,WHAT): apt-get install those of PACKAGES not installed yet.
define apt_missing
missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
  | grep -q 'ok installed' || echo $$p; done); \
if [ -n "$$missing" ]; then \
  echo "installing $(2): $$missing"; \
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
fi
endef

.PHONY: demo demo-multihost demo-multihost-down test test-tools venv host image image-debian \
	lint unit integration fuzz \
	bench clean-lab schema sanity

demo: host image
	$(BIN)/provision up $(LAB)
	$(BIN)/provision status $(LAB)

# Three namespace hypervisors on this machine, the lab of inventory/wide.yml across them
# through the playbooks over SSH, and what each hypervisor's OVS holds. Undo: make demo-multihost-down
ANSIBLE_ENV := PATH="$(CURDIR)/$(BIN):$$PATH" ANSIBLE_COLLECTIONS_PATH=playbooks/collections
demo-multihost: host image
	mkdir -p build
	$(BIN)/provision hosts up 3 --inventory build/hosts.yml
	$(ANSIBLE_ENV) $(BIN)/ansible-playbook -i build/hosts.yml -i inventory/wide.yml playbooks/site.yml
	$(BIN)/provision hosts exec hv1 -- ovs-vsctl show
	$(BIN)/provision hosts status

demo-multihost-down: venv
	$(ANSIBLE_ENV) $(BIN)/ansible-playbook -i build/hosts.yml -i inventory/wide.yml playbooks/down.yml
	$(BIN)/provision hosts down

# tests/ includes tests/fuzz, here with its small, derandomized CI budget (about a minute).
# VIRTIO_LAB_REQUIRE_CHROMIUM: the browser tests fail rather than skip without Chromium.
test: host image image-debian lint sanity test-tools
	VIRTIO_LAB_FUZZ=ci VIRTIO_LAB_REQUIRE_CHROMIUM=1 $(BIN)/pytest -v -rs tests

test-tools:
	@$(call apt_missing,$(TEST_PKGS),test tools)

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	@$(call apt_missing,$(BOOTSTRAP_PKGS),build prerequisites)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

host: venv
	$(BIN)/provision host prepare

image: venv
	$(BIN)/provision image build

# The Debian 12 cloud-style disk image (about a minute from Debian's mirror): the tests' stand-in
# for a downloaded cloud image, and the guests of inventory/handson-vhost-net.yml.
image-debian: venv
	$(BIN)/provision image build debian

# --exclude: ansible-test's results and its delegation venv, left by `make sanity` (1,300 files)
lint: venv
	$(BIN)/ruff check provision tests benchmarks playbooks
	PATH="$(CURDIR)/$(BIN):$$PATH" ANSIBLE_COLLECTIONS_PATH=playbooks/collections \
	  $(BIN)/ansible-lint --offline --strict --exclude $(COLLECTION)/tests/output playbooks/

# ansible-test sanity of the collection (the gate Galaxy collections run): each test in a venv
# of its own with ansible-test's pinned tools from PyPI, no containers. About 2 min the first
# time, 15-45 s once those venvs exist. ansible-test fetches its pip bootstrap from
# ci-files.testing.ansible.com; tests/sanity/get_pip.py stands in for it (PyPI is enough).
sanity: venv
	$(BIN)/python tests/sanity/get_pip.py --cache
	cd $(COLLECTION) && $(abspath $(BIN))/ansible-test sanity --venv --python 3.11 --color no

unit: venv test-tools
	VIRTIO_LAB_REQUIRE_CHROMIUM=1 $(BIN)/pytest -q tests/unit

# The lab file's JSON Schema that inventory/*.yml name for editors, regenerated from the spec
# models after a change to them (tests/unit/test_schema.py fails until it is).
schema: venv
	$(BIN)/provision schema --output schema/lab.schema.json

integration: host image test-tools
	VIRTIO_LAB_REQUIRE_CHROMIUM=1 $(BIN)/pytest -v -rs tests/integration

# The fuzzer with ten times the examples and a fresh random seed each run (VIRTIO_LAB_FUZZ=long;
# see tests/fuzz/conftest.py); `make fuzz FUZZ_PROFILE=shrink` minimises a CI failure instead.
FUZZ_PROFILE ?= long
fuzz: host image
	VIRTIO_LAB_FUZZ=$(FUZZ_PROFILE) $(BIN)/pytest -v -rs tests/fuzz

bench: host image
	$(BIN)/python benchmarks/bench_plan.py
	$(BIN)/python benchmarks/bench_up.py
	$(BIN)/python benchmarks/bench_guest_boot.py
	$(BIN)/python benchmarks/bench_cli.py --demo

clean-lab: venv
	$(BIN)/provision down $(LAB)
