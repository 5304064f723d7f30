#!/usr/bin/env bash
# Build an emulated aarch64 "device" for tests: an arm64 Debian root with python3, numpy, ai-edge-litert and
# onnxruntime, run by qemu user-mode through binfmt_misc. Needs root (chroot, mounts, apt).
# Usage: tools/arm_device/build.sh ROOT   (idempotent: a finished ROOT is left alone)
# Emulated timings are meaningless; the device exists so SSH, adb and the harness run for real on aarch64.
set -euo pipefail
ROOT=$(realpath -m "${1:?usage: build.sh ROOT}")
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -e "$ROOT/.edgekit-device-ready-v2" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: building the emulated device needs root (chroot, mounts, apt)" >&2
  exit 2
fi

apt_host() { bash "$HERE/../apt_host.sh" "$@"; }
command -v qemu-aarch64-static >/dev/null && command -v adb >/dev/null && command -v ssh >/dev/null \
  && command -v update-binfmts >/dev/null || apt_host qemu-user-static binfmt-support adb openssh-client

# binfmt_misc: without it only the first program runs under qemu and its children fail.
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

if grep -q " $ROOT/" /proc/self/mounts; then
  echo "error: $ROOT has mounts (a running emulated device?): stop it first (tools/arm_device/device.py stop)" >&2
  exit 2
fi
rm -rf "$ROOT" && mkdir -p "$ROOT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# arm64 packages through a private apt state, so the host's dpkg is untouched.
A=$WORK/apt
mkdir -p "$A/etc/apt/sources.list.d" "$A/var/lib/dpkg" "$A/var/cache/apt/archives/partial" "$A/var/lib/apt/lists/partial"
cp /etc/apt/sources.list.d/*.sources "$A/etc/apt/sources.list.d/" 2>/dev/null || true
[ -e /etc/apt/sources.list ] && cp /etc/apt/sources.list "$A/etc/apt/"
touch "$A/var/lib/dpkg/status"
APT=(apt-get -q -o "Dir=$A" -o "Dir::State::status=$A/var/lib/dpkg/status" -o APT::Architecture=arm64
     -o APT::Architectures::=arm64 -o Dir::Etc::trusted=/etc/apt/trusted.gpg
     -o Dir::Etc::trustedparts=/etc/apt/trusted.gpg.d)
mkdir -p "$A/etc/apt/preferences.d"
APT+=(-o APT::Sandbox::User=root)
"${APT[@]}" update >/dev/null
"${APT[@]}" install -y --download-only --no-install-recommends '?priority(required)' \
  python3 openssh-server procps >/dev/null

for d in bin sbin lib; do mkdir -p "$ROOT/usr/$d" && ln -s "usr/$d" "$ROOT/$d"; done
for deb in "$A"/var/cache/apt/archives/*.deb; do
  dpkg-deb --fsys-tarfile "$deb" | tar -C "$ROOT" --keep-directory-symlink -xf -
done

# What the maintainer scripts would have done.
cp "$ROOT/usr/share/base-passwd/passwd.master" "$ROOT/etc/passwd"
cp "$ROOT/usr/share/base-passwd/group.master" "$ROOT/etc/group"
echo "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin" >> "$ROOT/etc/passwd"
awk -F: '{print $1":*:19000:0:99999:7:::"}' "$ROOT/etc/passwd" > "$ROOT/etc/shadow"
sed -i 's/^root:\*:/root::/' "$ROOT/etc/shadow"
[ -e "$ROOT/etc/ssh/sshd_config" ] || cp "$ROOT/usr/share/openssh/sshd_config" "$ROOT/etc/ssh/sshd_config"
ssh-keygen -A -f "$ROOT" >/dev/null
mkdir -p "$ROOT/run/sshd" "$ROOT/root/.ssh" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev/pts" "$ROOT/data/local/tmp"
chmod 0700 "$ROOT/root/.ssh"
chmod 1777 "$ROOT/tmp" 2>/dev/null || { mkdir -p "$ROOT/tmp" && chmod 1777 "$ROOT/tmp"; }
chmod 0777 "$ROOT/data/local/tmp"
for node in null zero random urandom tty; do
  [ -e "$ROOT/dev/$node" ] || cp -a "/dev/$node" "$ROOT/dev/$node"
done
ln -sf /proc/self/fd "$ROOT/dev/fd"

# Look like a Raspberry Pi 4 to whoever probes (and keep XNNPACK and onnxruntime from reading x86 cpuinfo).
cp "$HERE/cpuinfo" "$ROOT/etc/edgekit-cpuinfo"
# A static sysfs of a 4-core Pi instead of the host's: with the host's x86 sysfs mounted, XNNPACK's cpuinfo picks
# INT8 kernels that compute wrong results under qemu (measured: logits off by 8 on an INT8 MobileNetV2).
SYS=$ROOT/sys/devices/system/cpu
mkdir -p "$SYS" "$ROOT/sys/class/thermal/thermal_zone0"
for f in possible present online; do echo 0-3 > "$SYS/$f"; done
for cpu in 0 1 2 3; do
  mkdir -p "$SYS/cpu$cpu/cpufreq"
  echo ondemand > "$SYS/cpu$cpu/cpufreq/scaling_governor"   # Raspberry Pi OS's default
  echo 1800000 > "$SYS/cpu$cpu/cpufreq/cpuinfo_max_freq"
  echo 1800000 > "$SYS/cpu$cpu/cpufreq/scaling_cur_freq"
done
echo 47000 > "$ROOT/sys/class/thermal/thermal_zone0/temp"
# An Android-style getprop for the adb path.
mkdir -p "$ROOT/system/bin"
install -m 0755 "$HERE/getprop" "$ROOT/system/bin/getprop"

# Python wheels for aarch64 (several manylinux tags: one alone misses ai-edge-litert).
PY=$(ls "$ROOT"/usr/bin/python3.* | grep -E 'python3\.[0-9]+$' | head -1)
PYVER=$(basename "$PY" | sed 's/python3\.//')
PLATFORMS=()
for tag in manylinux2014_aarch64 manylinux_2_27_aarch64 manylinux_2_28_aarch64 manylinux_2_31_aarch64 \
           manylinux_2_34_aarch64 manylinux_2_35_aarch64 manylinux_2_36_aarch64; do
  PLATFORMS+=(--platform "$tag")
done
PIPFLAGS=(--only-binary=:all: --python-version "3$PYVER" --implementation cp --abi "cp3$PYVER" "${PLATFORMS[@]}")
PYTHON=${PYTHON:-python3}
PIP=("$PYTHON" -m pip -q --disable-pip-version-check)
quietly() { "$@" >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; exit 1; }; }
quietly "${PIP[@]}" download "${PIPFLAGS[@]}" -d "$WORK/wheels" numpy ai-edge-litert onnxruntime
quietly "${PIP[@]}" install --root-user-action=ignore --no-index --find-links "$WORK/wheels" "${PIPFLAGS[@]}" \
  --target "$ROOT/usr/local/lib/python3.$PYVER/dist-packages" numpy ai-edge-litert onnxruntime

touch "$ROOT/.edgekit-device-ready-v2"
echo "emulated aarch64 device built in $ROOT"
