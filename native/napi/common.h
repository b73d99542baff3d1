// What both addons (cpu: addon.cpp, cuda: cuda-addon.cpp) need from N-API: status codes as JS errors with a
// `code`, value descriptions for messages, and the check that every pointer argument of an op call points
// into a live block of the calling addon (a stale or foreign address is a JS Error, never a wild access).
#pragma once
#include <napi.h>

#include <cmath>
#include <new>
#include <stdexcept>
#include <string>

#include "../include/sana_ops.h"

namespace {

const char* code_of(int status) {
  switch (status) {
    case SANA_ERR_INVALID_ARGUMENT: return "ERR_SANA_INVALID_ARGUMENT";
    case SANA_ERR_OUT_OF_MEMORY: return "ERR_SANA_OUT_OF_MEMORY";
    case SANA_ERR_UNSUPPORTED: return "ERR_SANA_UNSUPPORTED";
    default: return "ERR_SANA_NATIVE";
  }
}

[[noreturn]] void throw_code(Napi::Env env, const char* code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  throw e;
}

[[noreturn]] void invalid(Napi::Env env, const std::string& msg) { throw_code(env, "ERR_SANA_INVALID_ARGUMENT", msg); }

std::string describe(const Napi::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsUndefined()) return "undefined";
  if (v.IsNumber()) return std::to_string(v.As<Napi::Number>().DoubleValue());
  if (v.IsTypedArray()) {
    static const char* names[] = {"Int8Array",   "Uint8Array",   "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array", "Int32Array",   "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    auto t = v.As<Napi::TypedArray>().TypedArrayType();
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "a typed array";
  }
  if (v.IsString()) return "a string";
  if (v.IsObject()) return "an object";
  return "a value";
}

// Every pointer slot of op `op` (p, and the first slot of a view v) must be null (p only) or an address for
// which contains(address) holds.
template <class Contains>
void check_pointer_slots(Napi::Env env, int op, const double* slots, int n, Contains contains) {
  const char* sig = sana_op_signature(op);
  for (int i = 0, slot = 0; sig[i] && slot < n; ++i) {
    char kind = sig[i];
    if (kind == 'p' || kind == 'v') {
      double d = slots[slot];
      bool ok = (kind == 'p' && d == 0) || (d > 0 && d < 9007199254740992.0 && d == std::floor(d) && contains((uintptr_t)d));
      if (!ok)
        invalid(env, std::string(sana_op_name(op)) + ": Expected argument " + std::to_string(i) +
                         " to point into a live buffer of this addon but received " + describe(Napi::Number::New(env, d)) +
                         " (freed, or never allocated here)");
    }
    slot += kind == 'v' ? 5 : kind == 'a' ? 11 : 1;
  }
}

// Argument i of a call as an integer (a double holding one exactly), else an ERR_SANA_INVALID_ARGUMENT naming it.
ptrdiff_t integer_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Napi::Value v = info[i];
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9007199254740991.0)
    invalid(info.Env(), std::string(op) + ": Expected an integer for " + name + " but received " + describe(v));
  return (ptrdiff_t)d;
}

// Runs a method body with C++ exceptions turned into coded JS errors (out of memory, anything else native).
template <class F>
Napi::Value guarded(const Napi::CallbackInfo& info, F&& body) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw_code(info.Env(), "ERR_SANA_OUT_OF_MEMORY", "sana: out of memory");
  } catch (const std::exception& e) {
    throw_code(info.Env(), "ERR_SANA_NATIVE", std::string("sana: ") + e.what());
  }
}

constexpr int kArgSlots = 64;

// [{name, signature}] in op-number order (sana_op_name / sana_op_signature).
Napi::Value op_list(Napi::Env env) {
  Napi::Array list = Napi::Array::New(env);
  for (int op = 0; op < sana_op_count(); ++op) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("name", sana_op_name(op));
    e.Set("signature", sana_op_signature(op));
    list.Set((uint32_t)op, e);
  }
  return list;
}

// The argument slots of every call: one Float64Array per addon instance or context, made on first use and
// written by the TS side before each call.
Napi::Value arg_buffer(Napi::Env env, Napi::Reference<Napi::Float64Array>& args) {
  if (args.IsEmpty()) args = Napi::Persistent(Napi::Float64Array::New(env, kArgSlots));
  return args.Value();
}

struct CallArgs {
  int op, nargs;
  const double* slots;
};
// call(op, nargs): the op number and how many slots of the argument buffer it uses, checked (the op exists,
// the slots fit, every pointer points into a live block: contains(address)).
template <class Contains>
CallArgs call_args(const Napi::CallbackInfo& info, const Napi::Reference<Napi::Float64Array>& args, Contains contains) {
  ptrdiff_t op = integer_arg(info, 0, "call", "op"), n = integer_arg(info, 1, "call", "nargs");
  if (op < 0 || op >= sana_op_count()) invalid(info.Env(), "call: Expected an op 0.." + std::to_string(sana_op_count() - 1) + " but received " + std::to_string(op));
  if (args.IsEmpty() || n < 0 || n > kArgSlots) invalid(info.Env(), "call: Expected 0.." + std::to_string(kArgSlots) + " argument slots in the argBuffer() for nargs");
  const double* slots = args.Value().Data();
  check_pointer_slots(info.Env(), (int)op, slots, (int)n, contains);
  return {(int)op, (int)n, slots};
}

}  // namespace
