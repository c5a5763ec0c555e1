// CUDA kernels of the reconstruction engine; the numba twins in _cpu_kernels.py keep the same
// names, arguments and arithmetic order. Indices into the (P, nz, n) buffers are 64-bit.
//
// Geometry: a point (x, y, z) relative to the axis projects at angle t onto detector column
// u = x cos t - y sin t + center and row v = z + nz/2; linear interpolation in u (bilinear in
// (u, v) for tilted slices), zero outside the detector.

#define MIN_TRANSMISSION 1e-3f

// Flat-field normalisation (and -log) of k frames (nz, n) into rows of m >= n floats; columns
// n..m-1 are written 0 (the zero padding of the filter's FFT).
template <typename T>
__global__ void preprocess(const T* __restrict__ raw, const float* __restrict__ dark,
                           const float* __restrict__ flat, int nz, int n, int m, long long total,
                           int take_log, float* __restrict__ out, unsigned long long* bad) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long row = i / m;                          // frame * nz + detector row
        int c = (int)(i - row * m);
        if (c >= n) { out[i] = 0.0f; continue; }
        long long p = (row % nz) * n + c;
        float v = (float)raw[row * n + c];
        float d = dark[p];
        float den = flat[p] - d;
        float t = 1.0f;
        if (!isfinite(v)) {
            atomicAdd(bad, 1ULL);
        } else if (den > 0.0f) {
            t = (v - d) / den;
        }
        if (take_log) t = -logf(fmaxf(t, MIN_TRANSMISSION));
        out[i] = t;
    }
}

// Row value at u from a row padded with zeros at both ends (padded[c + 1] = row[c]).
__device__ __forceinline__ float interp_padded(const float* padded, int n, float u) {
    u = fminf(fmaxf(u, -1.0f), (float)n);
    int i = (int)(u + 1.0f);
    float f = u + 1.0f - (float)i;
    return (1.0f - f) * padded[i] + f * padded[i + 1];
}

// Row iz of frames idx times their weights, zero-padded: sino[j, c + 1] = w_j filt[idx[j], iz, c]
// for c in 0..n-1; columns 0, n + 1 and n + 2 of each (n + 3)-float row are 0. The Z slice then
// reads one contiguous sinogram (it fits the L2 cache) instead of rows a frame apart.
extern "C" __global__ void gather_sinogram(const float* __restrict__ filt, const int* __restrict__ idx,
                                           const float* __restrict__ weights, int k, int nz, int n,
                                           int iz, float* __restrict__ sino) {
    int m = n + 3;
    long long total = (long long)k * m;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        int j = (int)(t / m);
        int c = (int)(t - (long long)j * m) - 1;
        float v = 0.0f;
        if (c >= 0 && c < n) v = weights[j] * filt[((long long)idx[j] * nz + iz) * (long long)n + c];
        sino[t] = v;
    }
}

// Z slice from the padded sinogram: each thread owns ZROWS output rows blockDim.y apart in one
// column, so a frame's parameters are loaded once for ZROWS interpolations (branch-free: u is
// clamped onto the zero padding).
#define ZROWS 4
extern "C" __global__ void backproject_z(const float* __restrict__ sino, const float* __restrict__ cos_t,
                                         const float* __restrict__ sin_t, int k, int n, float center,
                                         double* __restrict__ out) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    int r0 = blockIdx.y * blockDim.y * ZROWS + threadIdx.y;
    int m = n + 3;
    float half = 0.5f * n, hi = (float)n, x = (float)col;
    float y[ZROWS], acc[ZROWS];
#pragma unroll
    for (int p = 0; p < ZROWS; p++) { y[p] = (float)(r0 + p * (int)blockDim.y) - half; acc[p] = 0.0f; }
    for (int j = 0; j < k; j++) {
        float c = __ldg(cos_t + j), s = __ldg(sin_t + j);
        const float* row = sino + (long long)j * m;
#pragma unroll
        for (int p = 0; p < ZROWS; p++) {
            float u = fminf(fmaxf(x * c + (center - y[p] * s - half * c), -1.0f), hi) + 1.0f;
            int i = (int)u;                          // floor: u >= 0
            float f = u - (float)i;
            acc[p] += (1.0f - f) * __ldg(row + i) + f * __ldg(row + i + 1);
        }
    }
#pragma unroll
    for (int p = 0; p < ZROWS; p++) {
        int r = r0 + p * (int)blockDim.y;
        if (col < n && r < n) out[(long long)r * n + col] += acc[p];
    }
}

// Y and X slices: one block per detector row; the rows of YF frames at a time are staged in
// shared memory (zero-padded, n + 3 floats each) and feed both slices, while the next YF rows
// are already being loaded into registers (one pair of barriers per YF frames, global loads
// overlapped with the interpolations). Each thread owns up to PER columns.
#define PER 8
#ifndef YF
#define YF 1
#endif
extern "C" __global__ void backproject_yx(const float* __restrict__ filt, const int* __restrict__ idx,
                                          const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                          const float* __restrict__ weights, int k, int nz, int n,
                                          float center, int iy, int ix, double* __restrict__ out_y,
                                          double* __restrict__ out_x) {
    extern __shared__ float rows[];                 // YF x (n + 3) floats
    int r = blockIdx.x, m = n + 3;
    float half = 0.5f * n;
    float y0 = (float)iy - half, x0 = (float)ix - half;
    float acc_y[PER], acc_x[PER], next[YF][PER];
#pragma unroll
    for (int p = 0; p < PER; p++) { acc_y[p] = 0.0f; acc_x[p] = 0.0f; }
    for (int t = threadIdx.x; t < YF * m; t += blockDim.x) rows[t] = 0.0f;
#pragma unroll
    for (int f = 0; f < YF; f++) {
#pragma unroll
        for (int p = 0; p < PER; p++) {
            int col = threadIdx.x + p * blockDim.x;
            next[f][p] = (f < k && col < n) ? __ldg(filt + ((long long)idx[f] * nz + r) * n + col) : 0.0f;
        }
    }
    for (int g = 0; g < k; g += YF) {
        __syncthreads();                            // the previous stage has been read
#pragma unroll
        for (int f = 0; f < YF; f++) {
            float w = g + f < k ? weights[g + f] : 0.0f;  // weight applied once per stored value
#pragma unroll
            for (int p = 0; p < PER; p++) {
                int col = threadIdx.x + p * blockDim.x;
                if (col < n) rows[f * m + col + 1] = w * next[f][p];
            }
        }
        __syncthreads();
#pragma unroll
        for (int f = 0; f < YF; f++) {             // prefetch the next stage
            int j = g + YF + f;
#pragma unroll
            for (int p = 0; p < PER; p++) {
                int col = threadIdx.x + p * blockDim.x;
                next[f][p] = (j < k && col < n) ? __ldg(filt + ((long long)idx[j] * nz + r) * n + col) : 0.0f;
            }
        }
        int nf = min(YF, k - g);
        for (int f = 0; f < nf; f++) {
            int j = g + f;
            float c = cos_t[j], s = sin_t[j];
            float base_y = center - y0 * s - half * c;
            float base_x = center + x0 * c + half * s;
            const float* padded = rows + f * m;
#pragma unroll
            for (int p = 0; p < PER; p++) {
                int col = threadIdx.x + p * blockDim.x;
                if (col < n) {
                    acc_y[p] += interp_padded(padded, n, (float)col * c + base_y);
                    acc_x[p] += interp_padded(padded, n, (float)col * (-s) + base_x);
                }
            }
        }
    }
#pragma unroll
    for (int p = 0; p < PER; p++) {
        int col = threadIdx.x + p * blockDim.x;
        if (col < n) {
            out_y[(long long)r * n + col] += acc_y[p];
            out_x[(long long)r * n + col] += acc_x[p];
        }
    }
}

// Tilted slices: one thread per sample point (x, y, z), bilinear in (u, v).
extern "C" __global__ void backproject_points(const float* __restrict__ filt, const int* __restrict__ idx,
                                              const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                              const float* __restrict__ weights, int k, int nz, int n,
                                              float center, const float* __restrict__ points, long long m,
                                              double* __restrict__ out) {
    long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= m) return;
    float x = points[3 * p], y = points[3 * p + 1];
    float v = points[3 * p + 2] + 0.5f * nz;
    float v0 = floorf(v);
    float fv = v - v0;
    int iv = (int)v0;
    float acc = 0.0f;
    for (int j = 0; j < k; j++) {
        float u = x * cos_t[j] - y * sin_t[j] + center;
        float u0 = floorf(u);
        float fu = u - u0;
        int iu = (int)u0;
        const float* frame = filt + (long long)idx[j] * nz * (long long)n;
        float val = 0.0f;
        for (int dv = 0; dv < 2; dv++) {
            int row = iv + dv;
            if (row >= 0 && row < nz) {
                float wv = dv == 1 ? fv : 1.0f - fv;
                if (iu >= 0 && iu < n) val += wv * (1.0f - fu) * __ldg(frame + (long long)row * n + iu);
                if (iu + 1 >= 0 && iu + 1 < n) val += wv * fu * __ldg(frame + (long long)row * n + iu + 1);
            }
        }
        acc += weights[j] * val;
    }
    out[p] += acc;
}
