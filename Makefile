# cri-lxc — the two commands of the README:
#   make run    install Debian packages, build, start the daemon with built-in defaults (foreground)
#   make test   install Debian packages, build, run the whole test suite
# `make install` installs the binary and the systemd unit and starts it under systemd;
# `make bench` measures pod and container lifecycle latency, and compares cri-lxc with containerd
# (report: target/bench-report/latest.md and latest.svg).

DEB_PACKAGES := build-essential pkg-config protobuf-compiler clang libclang-dev lxc lxc-dev \
                docker-registry apache2-utils busybox-static zstd iproute2 iptables containernetworking-plugins \
                python3-websocket
CARGO ?= cargo

# Packages that start a service when installed (docker-registry on :5000, containerd) get it disabled
# again right after *we* installed them: the tests and the bench start their own instances. A service
# that was already installed belongs to the admin and is left alone.

.PHONY: deps build run install test bench clean

deps:
	@if [ "$$(id -u)" != 0 ]; then echo "run as root: packages are installed with apt-get"; exit 1; fi
	@missing=""; for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
		case "$$missing" in *docker-registry*) \
			command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1 && systemctl disable --now docker-registry >/dev/null 2>&1 || true;; \
		esac; \
	fi

build: deps
	$(CARGO) build --release

run: build
	./target/release/cri-lxc

install: build
	install -D -m 0755 target/release/cri-lxc /usr/local/bin/cri-lxc
	install -D -m 0644 systemd/cri-lxc.service /etc/systemd/system/cri-lxc.service
	install -D -m 0644 README.md /usr/share/doc/cri-lxc/README.md
	systemctl daemon-reload
	systemctl enable --now cri-lxc

test: deps
	$(CARGO) test -- --test-threads=4

# The comparison needs Debian's containerd + runc as the reference (started by the bench itself on
# a private socket/root/state, never as a system service). When the bench installs containerd, the
# package's own service is disabled again; a containerd that was already installed is left alone.
BENCH_PACKAGES := containerd runc

bench: deps
	@missing=""; for p in $(BENCH_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
		case "$$missing" in *containerd*) \
			command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1 && systemctl disable --now containerd >/dev/null 2>&1 || true;; \
		esac; \
	fi
	$(CARGO) bench --bench lifecycle_latency
	$(CARGO) bench --bench compare

clean:
	$(CARGO) clean
