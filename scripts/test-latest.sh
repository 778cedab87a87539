#!/bin/sh
# `make test-latest`: lint and the whole suite against the newest release of
# every dependency, as `make lock` would pick them today, without touching this
# checkout: a copy of the working tree in build/latest gets its own lock and
# venv. An early warning of drift; CI never runs it.
set -u
uv=$1
top=$(pwd)
dir=$top/build/latest
rm -rf "$dir" && mkdir -p "$dir"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} sh -c 'test -e "{}" && echo "{}"' |
  tar -cf - -T - | tar -xf - -C "$dir"
cd "$dir" || exit 2
"$uv" lock --upgrade -q || exit 2
echo "== test-latest: what the newest releases change against uv.lock"
python3 - "$top/uv.lock" uv.lock <<'PY'
import sys, tomllib
def versions(path):
    with open(path, "rb") as f:
        return {(p["name"], p["version"]) for p in tomllib.load(f)["package"]}
old, new = versions(sys.argv[1]), versions(sys.argv[2])
names = sorted({n for n, _ in old ^ new})
for name in names:
    a = ", ".join(sorted(v for n, v in old if n == name)) or "-"
    b = ", ".join(sorted(v for n, v in new if n == name)) or "-"
    print(f"  {name}: {a} -> {b}")
print(f"  {len(names)} package(s) differ" if names else "  none: uv.lock is the newest")
PY
make test
code=$?
if [ "$code" -eq 0 ]; then
  echo "== test-latest: lint and tests PASS on the newest versions (make lock would be safe)"
else
  echo "== test-latest: FAILED on the newest versions (exit $code): see above; uv.lock still pins what passes"
fi
exit $code
