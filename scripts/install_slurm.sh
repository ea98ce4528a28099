#!/usr/bin/env bash
# Test set-up: Debian's SLURM (slurm-wlm: slurmctld, slurmd and the client commands; slurmdbd), munge and MariaDB for
# the SLURM tests (tests/test_slurm.py, which start their own one-node cluster with accounting as plain processes in
# a temporary folder: tests/slurm.py). Installs the packages that are missing when apt-get can run (root); starts
# no service. Otherwise says why, and the SLURM tests skip with that reason. Never fails the test run itself.
set -u
missing=""
for program in slurmctld slurmd slurmdbd sbatch munged mungekey mariadbd mariadb-install-db; do
    command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] || missing="$missing $program"
done
if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_slurm:$missing missing and apt-get cannot run here (need root and apt-get);" \
         "the SLURM tests will skip" >&2
    exit 0
fi
echo "install_slurm: installing Debian's slurm-wlm, slurmdbd, munge and mariadb-server for the SLURM tests" >&2
export DEBIAN_FRONTEND=noninteractive
packages="slurm-wlm slurmdbd munge mariadb-server"
# another apt-get (install_browser.sh) may hold dpkg's lock: wait for it rather than fail
apt="apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends"
if ! $apt $packages >/tmp/install_slurm.log 2>&1; then
    apt-get -o DPkg::Lock::Timeout=600 update -q >>/tmp/install_slurm.log 2>&1
    $apt $packages >>/tmp/install_slurm.log 2>&1 \
        || echo "install_slurm: apt-get install failed (see /tmp/install_slurm.log); the SLURM tests will skip" >&2
fi
exit 0
