// ReLU linear attention (per-head fp32 state) and softmax attention (key bias, causal, window, soft-cap, GQA).
// Included by ops.inl inside the variant's namespace.

int linear_attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v,
                     const sana_view4* out, ptrdiff_t B, ptrdiff_t N, ptrdiff_t heads, ptrdiff_t d, float eps) {
  ptrdiff_t dp = round_up(d, VW);
  size_t per = sizeof(float) * (size_t)(d * dp + dp + 3 * TB * dp);
  int T = ctx_threads(ctx);
  char* buf = static_cast<char*>(scratch_alloc(per * (size_t)T));
  if (!buf) return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "linear_attention: out of memory");
  parallel_for(ctx, B * heads, [&](ptrdiff_t t0, ptrdiff_t t1, int slot) {
    float* kvt = reinterpret_cast<float*>(buf + per * (size_t)slot);
    float* ksum = kvt + d * dp;
    float* kb = ksum + dp;
    float* vb = kb + TB * dp;
    float* qb = vb + TB * dp;
    for (ptrdiff_t task = t0; task < t1; ++task) {
      ptrdiff_t b = task / heads, h = task % heads;
      std::memset(kvt, 0, sizeof(float) * (d * dp + dp));
      for (ptrdiff_t n0 = 0; n0 < N; n0 += TB) {
        ptrdiff_t nb = mn(TB, N - n0);
        gather_block(k, b, n0, nb, h, d, dp, true, kb);
        gather_block(v, b, n0, nb, h, d, dp, false, vb);
        for (ptrdiff_t n = 0; n < nb; ++n) {
          const float* kr = kb + n * dp;
          const float* vr = vb + n * dp;
          for (ptrdiff_t i = 0; i < dp; i += VW) vstore(ksum + i, vload(ksum + i) + vload(kr + i));
          for (ptrdiff_t j = 0; j < d; ++j) {
            float kj = kr[j];
            float* row = kvt + j * dp;
            for (ptrdiff_t i = 0; i < dp; i += VW) vstore(row + i, vload(row + i) + vload(vr + i) * kj);
          }
        }
      }
      for (ptrdiff_t n0 = 0; n0 < N; n0 += TB) {
        ptrdiff_t nb = mn(TB, N - n0);
        gather_block(q, b, n0, nb, h, d, dp, true, qb);
        for (ptrdiff_t n = 0; n < nb; ++n) {
          float* qr = qb + n * dp;
          vf den = vf{};
          for (ptrdiff_t i = 0; i < dp; i += VW) den += vload(ksum + i) * vload(qr + i);
          float inv_den = hsum(den) + eps;
          float* o = vb + n * dp;  // reuse the v block as output staging
          for (ptrdiff_t i = 0; i < dp; i += VW) {
            vf acc = vf{};
            for (ptrdiff_t j = 0; j < d; ++j) acc += vload(kvt + j * dp + i) * qr[j];
            vstore(o + i, acc / inv_den);
          }
        }
        float* base = out->data + b * out->sb + n0 * out->sn + h * out->sh;
        for (ptrdiff_t n = 0; n < nb; ++n)
          for (ptrdiff_t i = 0; i < d; ++i) base[n * out->sn + i * out->sd] = vb[n * dp + i];
      }
    }
  });
  scratch_free(buf);
  return SANA_OK;
}

// Softmax attention as two GEMMs per (batch, query head): S = Q·Kᵀ [Lq, Lk] on the GEMM driver (strided
// operands, no copies of q/k/v), a row-parallel softmax in place (scale, soft-cap, key bias, causal and
// window masks), then O = P·V straight into the output view.
int attention(sana_ctx* ctx, const sana_view4* q, const sana_view4* k, const sana_view4* v, const float* key_bias,
              const sana_attention_params* p, const sana_view4* out) {
  ptrdiff_t Lq = p->len_q, Lk = p->len_kv, group = p->heads_q / p->heads_kv;
  bool direct = out->sd == 1;  // otherwise O goes through a [Lq, Dv] staging buffer
  float* S = static_cast<float*>(scratch_alloc(sizeof(float) * (size_t)(Lq * Lk)));
  float* O = direct ? nullptr : static_cast<float*>(scratch_alloc(sizeof(float) * (size_t)(Lq * p->head_dim_v)));
  if (!S || (!direct && !O)) {
    scratch_free(S);
    scratch_free(O);
    return fail(ctx, SANA_ERR_OUT_OF_MEMORY, "attention: out of memory for %td x %td scores", Lq, Lk);
  }
  int st = SANA_OK;
  for (ptrdiff_t b = 0; b < p->batch && st == SANA_OK; ++b)
    for (ptrdiff_t h = 0; h < p->heads_q && st == SANA_OK; ++h) {
      ptrdiff_t hk = h / group;
      Gemm g{};
      g.M = Lq, g.N = Lk, g.K = p->head_dim;
      g.A = Operand{q->data + b * q->sb + h * q->sh, SANA_F32, q->sn, q->sd};
      g.B = Operand{k->data + b * k->sb + hk * k->sh, SANA_F32, k->sd, k->sn};  // B(d, j) = k[j, d]
      g.C = S, g.ldc = Lk, g.act = SANA_ACT_NONE;
      st = gemm(ctx, g);
      if (st != SANA_OK) break;
      const float* bias = key_bias ? key_bias + b * Lk : nullptr;
      parallel_for(ctx, Lq, [&](ptrdiff_t i0, ptrdiff_t i1) {
        for (ptrdiff_t i = i0; i < i1; ++i) {
          float* row = S + i * Lk;
          ptrdiff_t lo = p->window > 0 ? mx<ptrdiff_t>(0, i - p->window + 1) : 0;
          ptrdiff_t hi = p->causal ? mn(Lk, i + 1) : Lk;
          for (ptrdiff_t m = 0; m < Lk; m += VW) {
            ptrdiff_t n = mn<ptrdiff_t>(VW, Lk - m);
            vf s = (n == VW ? vload(row + m) : vload_n(row + m, n)) * p->scale;
            if (p->softcap > 0) s = vtanh(s / p->softcap) * p->softcap;
            if (bias) s += n == VW ? vload(bias + m) : vload_n(bias + m, n);
            if (n == VW) vstore(row + m, s);
            else vstore_n(row + m, s, n);
          }
          float mval = -INFINITY;
          for (ptrdiff_t m = lo; m < hi; ++m) mval = row[m] > mval ? row[m] : mval;
          if (hi > lo && mval <= -FLT_MAX) {  // every visible key masked by a −FLT_MAX bias: uniform over all keys
            lo = 0, hi = Lk;
            for (ptrdiff_t m = 0; m < Lk; ++m) row[m] = 0.0f;
            mval = 0.0f;
          }
          float sum = 0.0f;
          for (ptrdiff_t m = 0; m < Lk; m += VW) {
            ptrdiff_t n = mn<ptrdiff_t>(VW, Lk - m);
            vf d = (n == VW ? vload(row + m) : vload_n(row + m, n)) - mval;
            vf e = vexp(d);
            vi idx;
            for (int l = 0; l < VW; ++l) idx[l] = (int32_t)(m + l);
            // exp underflows to exactly 0 below −87 (as in torch): the clamped ~1e-38 would feed denormals
            // into the P·V GEMM (a masked text key costs 100× then) and differ from the reference
            e = vselect((idx >= (int32_t)lo) & (idx < (int32_t)hi) & (d > -87.0f), e, vf{});
            sum += hsum(e);
            if (n == VW) vstore(row + m, e);
            else vstore_n(row + m, e, n);
          }
          float inv = sum > 0 ? 1.0f / sum : 0.0f;
          for (ptrdiff_t m = 0; m < Lk; m += VW) {
            ptrdiff_t n = mn<ptrdiff_t>(VW, Lk - m);
            vf e = (n == VW ? vload(row + m) : vload_n(row + m, n)) * inv;
            if (n == VW) vstore(row + m, e);
            else vstore_n(row + m, e, n);
          }
        }
      });
      Gemm o{};
      o.M = Lq, o.N = p->head_dim_v, o.K = Lk;
      o.A = Operand{S, SANA_F32, Lk, 1};
      o.B = Operand{v->data + b * v->sb + hk * v->sh, SANA_F32, v->sn, v->sd};  // B(j, e) = v[j, e]
      float* obase = out->data + b * out->sb + h * out->sh;
      o.C = direct ? obase : O, o.ldc = direct ? out->sn : p->head_dim_v, o.act = SANA_ACT_NONE;
      st = gemm(ctx, o);
      if (st == SANA_OK && !direct)
        for (ptrdiff_t i = 0; i < Lq; ++i)
          for (ptrdiff_t e = 0; e < p->head_dim_v; ++e) obase[i * out->sn + e * out->sd] = O[i * p->head_dim_v + e];
    }
  scratch_free(S);
  scratch_free(O);
  return st;
}

// Mix-FFN in row bands of the token grid: the expansion of rows [r0−1, r1] lives in a band buffer (the two
// rows shared with the previous band are carried over, never recomputed), the depth-wise conv + GLU of
// rows [r0, r1) goes to u, and u is projected straight into y.
