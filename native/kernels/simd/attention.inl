// ReLU linear attention (per-head fp32 state) and softmax attention (key bias, causal, window, soft-cap, GQA).
// Included by ops.inl inside the variant's namespace.

// Linear attention gathers its tokens in blocks of LA_TB, so any strides (fused qkv slices, NCHW channel groups)
// read efficiently.
constexpr ptrdiff_t LA_TB = 32;

// Tokens n0..n0+nb of head h as rows of ld floats (relu applied if asked, zeros from d to ld).
void gather_block(const sana_view4* t, ptrdiff_t b, ptrdiff_t n0, ptrdiff_t nb, ptrdiff_t h, ptrdiff_t d,
                  ptrdiff_t ld, bool relu, float* dst) {
  const float* base = t->data + b * t->sb + n0 * t->sn + h * t->sh;
  for (ptrdiff_t n = 0; n < nb; ++n) {
    float* row = dst + n * ld;
    const float* src = base + n * t->sn;
    if (t->sd == 1) {
      for (ptrdiff_t j = 0; j < ld; j += VW) {
        vf x = j + VW <= d ? vload(src + j) : j < d ? vload_n(src + j, d - j) : vf{};
        vstore(row + j, relu ? vmax(x, vf{}) : x);
      }
    } else {
      for (ptrdiff_t j = 0; j < ld; ++j) {
        float x = j < d ? src[j * t->sd] : 0.0f;
        row[j] = relu && x < 0 ? 0.0f : x;
      }
    }
  }
}

// Per task of (batch item, group of heads), claimed one at a time by the context's threads: each head's state
// Σ relu(k)ᵀ·v [d × d] and Σ relu(k) over blocks of LA_TB tokens, then each token's
// relu(q)·state / (relu(q)·Σ relu(k) + eps). A token block is read for all heads of the group before the next
// (heads of a token are neighbours in memory: the rows stream instead of jumping a page per head and token).
// Both products are register tiles of LA_R rows × two vectors (rows of the state, then tokens), summed over
// tokens (then state rows) in order, so results do not depend on the grouping or the thread count. Rows are
// padded with zeros to ld floats.
constexpr int LA_R = VW >= 8 ? 8 : 4;

int linear_attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v,
                     const sana_view4* out, ptrdiff_t B, ptrdiff_t N, ptrdiff_t heads, ptrdiff_t d, float eps) {
  int T = ctx_threads(ctx);
  ptrdiff_t ld = round_up(d, 2 * VW), jrows = round_up(d, LA_R), state = jrows * ld + ld;
  ptrdiff_t group = mx<ptrdiff_t>(1, heads * B / (4 * (ptrdiff_t)T)), groups = (heads + group - 1) / group;
  ptrdiff_t tasks = B * groups;
  size_t per = sizeof(float) * (size_t)(group * state + 3 * LA_TB * ld);
  int slots = (int)mn<ptrdiff_t>(T, tasks);
  char* buf = static_cast<char*>(scratch_alloc(per * (size_t)slots));
  if (!buf) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "linear_attention: out of memory");
  parallel_claim(ctx, tasks, [&](ptrdiff_t task, int slot) {
    float* states = reinterpret_cast<float*>(buf + per * (size_t)slot);  // per head: [jrows][ld] Σ relu(k_j)·v, then Σ relu(k)
    float* kb = states + group * state;
    float* vb = kb + LA_TB * ld;
    float* qb = vb + LA_TB * ld;
    ptrdiff_t b = task / groups, h0 = task % groups * group, h1 = mn(heads, h0 + group);
    std::memset(states, 0, sizeof(float) * (size_t)(group * state));
    for (ptrdiff_t n0 = 0; n0 < N; n0 += LA_TB)
      for (ptrdiff_t h = h0; h < h1; ++h) {
        ptrdiff_t nb = mn(LA_TB, N - n0);
        float* kvt = states + (h - h0) * state;
        float* ksum = kvt + jrows * ld;
        gather_block(k, b, n0, nb, h, d, ld, true, kb);
        gather_block(v, b, n0, nb, h, d, ld, false, vb);
        for (ptrdiff_t n = 0; n < nb; ++n)
          for (ptrdiff_t i = 0; i < ld; i += VW) vstore(ksum + i, vload(ksum + i) + vload(kb + n * ld + i));
        for (ptrdiff_t i0 = 0; i0 < ld; i0 += 2 * VW)
          for (ptrdiff_t j0 = 0; j0 < jrows; j0 += LA_R) {
            vf acc[LA_R][2];
            for (int r = 0; r < LA_R; ++r)
              for (int c = 0; c < 2; ++c) acc[r][c] = vload(kvt + (j0 + r) * ld + i0 + c * VW);
            for (ptrdiff_t n = 0; n < nb; ++n) {
              vf v0 = vload(vb + n * ld + i0), v1 = vload(vb + n * ld + i0 + VW);
              const float* kr = kb + n * ld + j0;
#pragma GCC unroll 8
              for (int r = 0; r < LA_R; ++r) {
                vf kj = vset(kr[r]);
                acc[r][0] += v0 * kj;
                acc[r][1] += v1 * kj;
              }
            }
            for (int r = 0; r < LA_R; ++r)
              for (int c = 0; c < 2; ++c) vstore(kvt + (j0 + r) * ld + i0 + c * VW, acc[r][c]);
          }
      }
    for (ptrdiff_t n0 = 0; n0 < N; n0 += LA_TB)
      for (ptrdiff_t h = h0; h < h1; ++h) {
        ptrdiff_t nb = mn(LA_TB, N - n0), nt = round_up(nb, LA_R);
        const float* kvt = states + (h - h0) * state;
        const float* ksum = kvt + jrows * ld;
        gather_block(q, b, n0, nb, h, d, ld, true, qb);
        std::memset(qb + nb * ld, 0, sizeof(float) * (size_t)((nt - nb) * ld));  // the last tile's extra tokens
        float inv_den[LA_TB];
        for (ptrdiff_t n = 0; n < nb; ++n) {
          vf den = vf{};
          for (ptrdiff_t i = 0; i < ld; i += VW) den += vload(ksum + i) * vload(qb + n * ld + i);
          inv_den[n] = hsum(den) + eps;
        }
        float* o = vb;  // the v block stages the output
        for (ptrdiff_t t0 = 0; t0 < nt; t0 += LA_R)
          for (ptrdiff_t i0 = 0; i0 < ld; i0 += 2 * VW) {
            vf acc[LA_R][2];
            for (int r = 0; r < LA_R; ++r) acc[r][0] = acc[r][1] = vf{};
            for (ptrdiff_t j = 0; j < d; ++j) {
              vf s0 = vload(kvt + j * ld + i0), s1 = vload(kvt + j * ld + i0 + VW);
#pragma GCC unroll 8
              for (int r = 0; r < LA_R; ++r) {
                vf qj = vset(qb[(t0 + r) * ld + j]);
                acc[r][0] += s0 * qj;
                acc[r][1] += s1 * qj;
              }
            }
            for (int r = 0; r < LA_R && t0 + r < nb; ++r)
              for (int c = 0; c < 2; ++c) vstore(o + (t0 + r) * ld + i0 + c * VW, acc[r][c] / inv_den[t0 + r]);
          }
        float* base = out->data + b * out->sb + n0 * out->sn + h * out->sh;
        for (ptrdiff_t n = 0; n < nb; ++n)
          for (ptrdiff_t i = 0; i < d; ++i) base[n * out->sn + i * out->sd] = o[n * ld + i];
      }
  });
  scratch_free(buf);
  return SANA_OK;
}

// Softmax attention in tasks of (batch, query head, block of ATT_QB query rows) that the context's threads claim
// one at a time (a thread whose core another process takes does fewer), each on its thread: S = Q·Kᵀ over
// the keys the block can see (causal and window masks bound them: half the work of a causal self-attention)
// on the GEMM driver (strided operands, no copies of q/k/v), the softmax in place (scale, soft-cap, key bias,
// masks), then O = P·V straight into the output view. Every row is computed in one task, so results do not
// depend on the thread count.
constexpr ptrdiff_t ATT_QB = 128;

int attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v, const float* key_bias,
              const sana_attention_params* p, const sana_view4* out) {
  ptrdiff_t Lq = p->len_q, Lk = p->len_kv, Dv = p->head_dim_v, group = p->heads_q / p->heads_kv;
  ptrdiff_t qblocks = (Lq + ATT_QB - 1) / ATT_QB, tasks = p->batch * p->heads_q * qblocks;
  bool direct = out->sd == 1;  // otherwise O goes through a [ATT_QB, Dv] staging buffer
  Gemm scores{}, mix{};        // the largest shapes a task runs, for the packing buffers
  scores.M = mix.M = mn(Lq, ATT_QB), scores.N = Lk, scores.K = p->head_dim, mix.N = Dv, mix.K = Lk;
  size_t s_bytes = sizeof(float) * (size_t)round_up(ATT_QB * Lk, 16);
  size_t o_bytes = sizeof(float) * (size_t)round_up(ATT_QB * Dv + Dv, 16);
  size_t per = s_bytes + o_bytes + mx(gemm_serial_bytes(scores), gemm_serial_bytes(mix));
  int slots = (int)mn<ptrdiff_t>(ctx_threads(ctx), tasks);
  char* buf = static_cast<char*>(scratch_alloc(per * (size_t)slots));
  if (!buf) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "attention: out of memory for %td x %td scores", mn(Lq, ATT_QB), Lk);
  parallel_claim(ctx, tasks, [&](ptrdiff_t task, int slot) {
    char* mine = buf + per * (size_t)slot;
    float* S = reinterpret_cast<float*>(mine);
    float* O = reinterpret_cast<float*>(mine + s_bytes);
    float* vmean = O + ATT_QB * Dv;
    char* pack = mine + s_bytes + o_bytes;
    ptrdiff_t b = task / (p->heads_q * qblocks), h = task / qblocks % p->heads_q, hk = h / group;
    ptrdiff_t q0 = task % qblocks * ATT_QB, rows = mn(ATT_QB, Lq - q0);
    ptrdiff_t klo = p->window > 0 ? mx<ptrdiff_t>(0, q0 - p->window + 1) : 0;
    ptrdiff_t khi = p->causal ? mn(Lk, q0 + rows) : Lk;
    if (khi <= klo) klo = 0, khi = Lk;  // no row of the block sees a key (uniform rows): any range will do
    ptrdiff_t nk = khi - klo;
    Gemm g{};
    g.M = rows, g.N = nk, g.K = p->head_dim;
    g.A = Operand{q->data + b * q->sb + h * q->sh + q0 * q->sn, SANA_F32, q->sn, q->sd};
    g.B = Operand{k->data + b * k->sb + hk * k->sh + klo * k->sn, SANA_F32, k->sd, k->sn};  // B(d, j) = k[j, d]
    g.C = S, g.ldc = nk, g.act = SANA_ACT_NONE;
    gemm_serial(g, pack);
    const float* bias = key_bias ? key_bias + b * Lk + klo : nullptr;
    // rows with no visible key, or whose every visible key a −FLT_MAX bias masks, get uniform weights over
    // all Lk keys (as torch's softmax of an all-minimum row): the mean of V, written after P·V
    bool uniform[ATT_QB], any_uniform = false;
    for (ptrdiff_t r = 0; r < rows; ++r) {
      ptrdiff_t i = q0 + r;
      float* row = S + r * nk;
      // the row's visible keys, as columns of S
      ptrdiff_t lo = (p->window > 0 ? mx<ptrdiff_t>(0, i - p->window + 1) : 0) - klo;
      ptrdiff_t hi = (p->causal ? mn(Lk, i + 1) : Lk) - klo;
      for (ptrdiff_t m = 0; m < nk; m += VW) {
        ptrdiff_t n = mn<ptrdiff_t>(VW, nk - m);
        vf s = (n == VW ? vload(row + m) : vload_n(row + m, n)) * p->scale;
        if (p->softcap > 0) s = vtanh(s / p->softcap) * p->softcap;
        if (bias) s += n == VW ? vload(bias + m) : vload_n(bias + m, n);
        if (n == VW) vstore(row + m, s);
        else vstore_n(row + m, s, n);
      }
      float mval = -INFINITY;
      for (ptrdiff_t m = lo; m < hi; ++m) mval = row[m] > mval ? row[m] : mval;
      uniform[r] = mval <= -FLT_MAX;
      any_uniform |= uniform[r];
      float sum = 0.0f;
      for (ptrdiff_t m = 0; m < nk; m += VW) {
        ptrdiff_t n = mn<ptrdiff_t>(VW, nk - m);
        vf d = (n == VW ? vload(row + m) : vload_n(row + m, n)) - mval;
        vf e = vexp(d);
        vi idx;
        for (int l = 0; l < VW; ++l) idx[l] = (int32_t)(m + l);
        // exp underflows to exactly 0 below −87 (as in torch): the clamped ~1e-38 would feed denormals
        // into the P·V GEMM (a masked text key costs 100× then) and differ from the reference
        e = vselect((idx >= (int32_t)lo) & (idx < (int32_t)hi) & (d > -87.0f), e, vf{});
        if (uniform[r]) e = vf{};
        sum += hsum(e);
        if (n == VW) vstore(row + m, e);
        else vstore_n(row + m, e, n);
      }
      float inv = sum > 0 ? 1.0f / sum : 0.0f;
      for (ptrdiff_t m = 0; m < nk; m += VW) {
        ptrdiff_t n = mn<ptrdiff_t>(VW, nk - m);
        vf e = (n == VW ? vload(row + m) : vload_n(row + m, n)) * inv;
        if (n == VW) vstore(row + m, e);
        else vstore_n(row + m, e, n);
      }
    }
    Gemm o{};
    o.M = rows, o.N = Dv, o.K = nk;
    o.A = Operand{S, SANA_F32, nk, 1};
    const float* vb = v->data + b * v->sb + hk * v->sh;
    o.B = Operand{vb + klo * v->sn, SANA_F32, v->sn, v->sd};  // B(j, e) = v[j, e]
    float* obase = out->data + b * out->sb + h * out->sh + q0 * out->sn;
    o.C = direct ? obase : O, o.ldc = direct ? out->sn : Dv, o.act = SANA_ACT_NONE;
    gemm_serial(o, pack);
    if (!direct)
      for (ptrdiff_t r = 0; r < rows; ++r)
        for (ptrdiff_t e = 0; e < Dv; ++e) obase[r * out->sn + e * out->sd] = O[r * Dv + e];
    if (any_uniform) {
      for (ptrdiff_t e = 0; e < Dv; ++e) {
        float acc = 0.0f;
        for (ptrdiff_t j = 0; j < Lk; ++j) acc += vb[j * v->sn + e * v->sd];
        vmean[e] = acc / (float)Lk;
      }
      for (ptrdiff_t r = 0; r < rows; ++r)
        if (uniform[r])
          for (ptrdiff_t e = 0; e < Dv; ++e) obase[r * out->sn + e * out->sd] = vmean[e];
    }
  });
  scratch_free(buf);
  return SANA_OK;
}

// Mix-FFN in row bands of the token grid: the expansion of rows [r0−1, r1] lives in a band buffer (the two
// rows shared with the previous band are carried over, never recomputed), the depth-wise conv + GLU of
// rows [r0, r1) goes to u, and u is projected straight into y.
