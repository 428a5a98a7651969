# polyvm run stamp: prints the live state a recipe's steps act on (written by polyvm, provisioners/stamp.py).
# $1: the run's digest. Root-only; its output's SHA-256 is compared with the stamp next to it.
cd /
printf 'digest %s\n' "$1"
@@FACTS@@
# f FILE: list a file whose type, mode, owner and SHA-256 count (all of them in one stat and one sha256sum
# at the end: a fork per file made the check slow on a busy host).
__polyvm_files=""
f() { __polyvm_files="$__polyvm_files$1
"; }
@@FILES@@
@@PROBES@@
printf '%s' "$__polyvm_files" | tr '\n' '\0' | xargs -0 -r stat -c 'file %n %F %a %U %G' -- 2>&1
printf '%s' "$__polyvm_files" | tr '\n' '\0' | xargs -0 -r sha256sum -- 2>&1
