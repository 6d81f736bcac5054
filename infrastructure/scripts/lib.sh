# shellcheck shell=bash
# Helpers shared by the bootstrap steps (sourced by them, never run on its own): logging,
# apt installs that skip what is present, and files written only when their content changed.
# cloud-init writes it to /usr/local/lib/wms/lib.sh beside the steps.

log() {
  printf '[%s] %s\n' "${WMS_STEP:-bootstrap}" "$*"
}

# apt_install PACKAGE...: installs the packages that are missing; none missing, no apt call.
apt_install() {
  local missing=() package
  for package in "$@"; do
    # shellcheck disable=SC2016 # ${Status} is dpkg-query's format, not a shell variable
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
      missing+=("$package")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  log "installing ${missing[*]}"
  # On a first boot cloud-init or unattended-upgrades may hold the dpkg lock for a while.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
    --no-install-recommends "${missing[@]}"
}

# apt_available PACKAGE: whether the configured archives offer PACKAGE.
apt_available() {
  apt-cache policy "$1" 2>/dev/null | grep -q "Candidate: [0-9]"
}

# put_file PATH MODE [OWNER]: writes stdin to PATH unless PATH already holds exactly that.
# Succeeds when it wrote (so `if put_file ...; then restart; fi`), fails when nothing changed.
put_file() {
  local path=$1 mode=$2 owner=${3:-root:root} tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    return 1
  fi
  install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$tmp" "$path"
  rm -f "$tmp"
  log "wrote $path"
}

# download URL FILE: fetches URL to FILE, retrying a flaky network.
download() {
  curl -fsSL --retry 5 --retry-delay 3 --connect-timeout 20 -o "$2" "$1"
}

# verify_sha256 FILE SUM NAME: succeeds when FILE's SHA-256 is SUM; otherwise says so in one line
# (NAME: what was downloaded, and the setting SUM came from) and fails.
verify_sha256() {
  local actual
  actual=$(sha256sum "$1" | cut -d ' ' -f 1)
  if [ "$actual" != "$2" ]; then
    log "$3: SHA-256 $actual, expected $2: not installed (a changed or broken download, or a wrong checksum)"
    return 1
  fi
}

# key_fingerprints FILE: the fingerprint of each primary key in the OpenPGP key FILE (armored or
# not), one per line, read without importing it anywhere.
key_fingerprints() {
  local home status=0
  home=$(mktemp -d)
  GNUPGHOME=$home gpg --batch --quiet --show-keys --with-colons "$1" 2>/dev/null |
    awk -F: '$1 == "pub" { primary = 1; next } primary && $1 == "fpr" { print $10; primary = 0 }' || status=$?
  rm -rf "$home"
  return "$status"
}
