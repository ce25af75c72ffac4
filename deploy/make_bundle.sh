#!/usr/bin/env bash
# Makes bundle/: a relocatable folder that runs on a GPU machine which has the NVIDIA driver and
# the CUDA libraries (libcublas.so.13) but none of Sieve's other dependencies.
#
#   deploy/make_bundle.sh [BUILD_DIR]     # default build-bundle; configured here if needed
#   BUNDLE_DIR=out JOBS=8 deploy/make_bundle.sh build-cuda
#
# bundle/
#   sieve, sieve_cuda_tests      stripped, RUNPATH $ORIGIN/lib
#   sieve_bench_kv_format_attention  (bench/gpu/kv_format_attention.cc) likewise
#   lib/                         the non-system, non-CUDA shared libraries they need (ldd),
#                                stripped, RUNPATH $ORIGIN
#   fixtures/golden/             the golden models (sieve_cuda_tests finds them beside itself)
#   run.sh PROGRAM [ARGS]        finds libcublas if the loader does not, then runs ./PROGRAM
#
# PACK=FILE also writes FILE, the bundle as a .tar.gz (for transports with a size limit).
#
# cudart is linked statically; libcuda (the driver), libcudart, libcublas and libcublasLt are never
# bundled: the GPU machine has its own, matching its driver. Needs patchelf (Debian: patchelf).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${1:-build-bundle}
BUNDLE_DIR=${BUNDLE_DIR:-bundle}
JOBS=${JOBS:-$(nproc)}
MAX_BYTES=$((64 * 1024 * 1024))

command -v patchelf >/dev/null || { echo "make_bundle: needs patchelf (apt-get install patchelf)" >&2; exit 1; }

if [[ ! -f $BUILD_DIR/build.ninja ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSIEVE_CUDA=ON \
    -DSIEVE_NATIVE=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$JOBS" --target sieve sieve_cuda_tests \
  sieve_bench_kv_format_attention

rm -rf "$BUNDLE_DIR"
mkdir -p "$BUNDLE_DIR/lib" "$BUNDLE_DIR/fixtures"
binaries=("$BUILD_DIR/sieve" "$BUILD_DIR/tests/cuda/sieve_cuda_tests"
  "$BUILD_DIR/bench/sieve_bench_kv_format_attention")
bundled=("$BUNDLE_DIR/sieve" "$BUNDLE_DIR/sieve_cuda_tests" "$BUNDLE_DIR/sieve_bench_kv_format_attention")
for bin in "${binaries[@]}"; do
  install -m 755 "$bin" "$BUNDLE_DIR/"
done

# What the GPU machine provides itself: the C library and loader, and everything CUDA.
is_system() {
  case "$1" in
    linux-vdso.so* | ld-linux*.so* | libc.so* | libm.so* | libpthread.so* | libdl.so* | \
      librt.so* | libresolv.so* | libutil.so*) return 0 ;;
    libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so* | libnvrtc*.so* | \
      libnvJitLink.so* | libnvidia-*.so* | libcufft*.so* | libcurand.so* | libcusparse*.so* | \
      libcusolver*.so* | libnccl.so*) return 0 ;;
  esac
  return 1
}

for bin in "${binaries[@]}"; do
  while read -r name _ path _; do
    [[ -n ${path:-} && -f $path ]] || continue
    is_system "$name" && continue
    [[ -f $BUNDLE_DIR/lib/$name ]] || install -m 644 "$(readlink -f "$path")" "$BUNDLE_DIR/lib/$name"
  done < <(ldd "$bin")
done

strip "${bundled[@]}"
strip --strip-unneeded "$BUNDLE_DIR"/lib/*.so*
for bin in "${bundled[@]}"; do patchelf --set-rpath '$ORIGIN/lib' "$bin"; done
for lib in "$BUNDLE_DIR"/lib/*.so*; do patchelf --set-rpath '$ORIGIN' "$lib"; done

cp -r tests/fixtures/golden "$BUNDLE_DIR/fixtures/"
rm -rf "$BUNDLE_DIR/fixtures/golden/__pycache__"

cat > "$BUNDLE_DIR/run.sh" <<'EOF'
#!/usr/bin/env bash
# Runs a program of this folder: ./run.sh sieve_cuda_tests, ./run.sh sieve generate ... .
# libcublas.so.13 comes from the machine: the loader's path, the CUDA toolkit, or the
# nvidia-cublas Python package, in that order.
set -uo pipefail
cd "$(dirname "$0")"
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas.so.13'; then
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    "$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)"; do
    if [[ -n $dir && -e $dir/libcublas.so.13 ]]; then
      export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      break
    fi
  done
fi
program=$1
shift
exec "./$program" "$@"
EOF
chmod 755 "$BUNDLE_DIR/run.sh"

# Every library resolves inside the bundle (CUDA and system ones aside).
for bin in "${bundled[@]}"; do
  if ldd "$bin" | grep -v -E 'libcublas|libcublasLt' | grep -q 'not found'; then
    echo "make_bundle: unresolved libraries in $bin:" >&2
    ldd "$bin" | grep 'not found' >&2
    exit 1
  fi
  if ldd "$bin" | grep '=>' | grep -v -E "$(realpath "$BUNDLE_DIR")/lib|/lib/x86_64-linux-gnu/lib(c|m|pthread|dl|rt)\.so|libcublas|libcuda|linux-vdso" | grep -q .; then
    echo "make_bundle: $bin loads libraries from outside the bundle:" >&2
    ldd "$bin" | grep '=>' | grep -v "$(realpath "$BUNDLE_DIR")/lib" >&2
  fi
done

bytes=$(du -sb "$BUNDLE_DIR" | cut -f1)
echo "make_bundle: $BUNDLE_DIR is $((bytes / 1024 / 1024)) MiB ($(ls "$BUNDLE_DIR/lib" | wc -l) libraries)"
# What travels must fit in 64 MiB: the folder, or its .tar.gz when PACK is given.
if [[ -n ${PACK:-} ]]; then
  tar -C "$(dirname "$BUNDLE_DIR")" -czf "$PACK" "$(basename "$BUNDLE_DIR")"
  bytes=$(stat -c %s "$PACK")
  echo "make_bundle: packed into $PACK ($((bytes / 1024 / 1024)) MiB)"
fi
if ((bytes > MAX_BYTES)); then
  echo "make_bundle: over the 64 MiB limit" >&2
  exit 1
fi
