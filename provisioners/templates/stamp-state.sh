# polyvm run stamp: prints the live state a recipe's steps act on (written by polyvm, provisioners/stamp.py).
# $1: the run's digest. Root-only; its output's SHA-256 is compared with the stamp next to it.
cd /
printf 'digest %s\n' "$1"
@@FACTS@@
f() {
  if [ -e "$1" ] || [ -L "$1" ]; then stat -c 'file %n %F %a %U %G' -- "$1"; sha256sum <"$1"; else echo "file $1 missing"; fi
}
@@FILES@@
@@PROBES@@
