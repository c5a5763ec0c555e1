// CUDA kernels of the reconstruction engine; the numba twins in _cpu_kernels.py keep the same
// names, arguments and arithmetic order. Indices into the (P, nz, n) buffers are 64-bit.
//
// Geometry: a point (x, y, z) relative to the axis projects at angle t onto detector column
// u = x cos t - y sin t + center and row v = z + nz/2; linear interpolation in u (bilinear in
// (u, v) for tilted slices), zero outside the detector.

#define MIN_TRANSMISSION 1e-3f

template <typename T>
__global__ void preprocess(const T* __restrict__ raw, const float* __restrict__ dark,
                           const float* __restrict__ flat, long long frame_size, long long total,
                           int take_log, float* __restrict__ out, unsigned long long* bad) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long p = i % frame_size;
        float v = (float)raw[i];
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

// Z slice: one thread per output pixel (ix, iy); frames read through the cache.
extern "C" __global__ void backproject_z(const float* __restrict__ filt, const int* __restrict__ idx,
                                         const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                         const float* __restrict__ weights, int k, int nz, int n,
                                         float center, int iz, double* __restrict__ out) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y * blockDim.y + threadIdx.y;
    if (col >= n || r >= n) return;
    float half = 0.5f * n;
    float y = (float)r - half;
    float acc = 0.0f;
#pragma unroll 4
    for (int j = 0; j < k; j++) {
        float c = cos_t[j], s = sin_t[j];
        const float* row = filt + ((long long)idx[j] * nz + iz) * (long long)n;
        float u = (float)col * c + (center - y * s - half * c);
        u = fminf(fmaxf(u, -1.0f), (float)n);
        int i = (int)(u + 1.0f);                     // floor(u) + 1, as u + 1 >= 0
        float f = u + 1.0f - (float)i;
        float a = (i >= 1 && i <= n) ? __ldg(row + i - 1) : 0.0f;
        float b = (i < n) ? __ldg(row + i) : 0.0f;
        acc += weights[j] * ((1.0f - f) * a + f * b);
    }
    out[(long long)r * n + col] += acc;
}

// Y and X slices: one block per detector row; the row of each frame is read once into
// shared memory (zero-padded) and feeds both slices. Each thread owns up to PER columns.
#define PER 8
extern "C" __global__ void backproject_yx(const float* __restrict__ filt, const int* __restrict__ idx,
                                          const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                          const float* __restrict__ weights, int k, int nz, int n,
                                          float center, int iy, int ix, double* __restrict__ out_y,
                                          double* __restrict__ out_x) {
    extern __shared__ float padded[];               // n + 3 floats
    int r = blockIdx.x;
    float half = 0.5f * n;
    float y0 = (float)iy - half, x0 = (float)ix - half;
    float acc_y[PER], acc_x[PER];
#pragma unroll
    for (int p = 0; p < PER; p++) { acc_y[p] = 0.0f; acc_x[p] = 0.0f; }
    if (threadIdx.x == 0) { padded[0] = 0.0f; padded[n + 1] = 0.0f; padded[n + 2] = 0.0f; }
    for (int j = 0; j < k; j++) {
        const float* row = filt + ((long long)idx[j] * nz + r) * (long long)n;
        __syncthreads();
        for (int c = threadIdx.x; c < n; c += blockDim.x) padded[c + 1] = __ldg(row + c);
        __syncthreads();
        float c = cos_t[j], s = sin_t[j], w = weights[j];
        float base_y = center - y0 * s - half * c;
        float base_x = center + x0 * c + half * s;
#pragma unroll
        for (int p = 0; p < PER; p++) {
            int col = threadIdx.x + p * blockDim.x;
            if (col < n) {
                acc_y[p] += w * interp_padded(padded, n, (float)col * c + base_y);
                acc_x[p] += w * interp_padded(padded, n, (float)col * (-s) + base_x);
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
