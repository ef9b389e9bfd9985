// Which shader variant (browser profile) to run: the profile named by the caller or matched from
// the user agent, checked against the adapter's real limits, falling back to the largest variant
// that fits; which optional adapter features (subgroups, shader-f16) to request for it; and which
// shader files that profile needs with the features the device has. Pure functions over the
// manifest, so they are testable without a GPU.

import { graphNodes } from './dispatch.js';

// What CPU implementations of WebGPU call themselves in GPUAdapterInfo (Chromium: vendor "google",
// architecture "swiftshader"; Mesa's llvmpipe / lavapipe). Firefox leaves the strings empty on
// lavapipe but sets isFallbackAdapter, as Chromium does on SwiftShader.
const CPU_ADAPTER_NAMES = /swiftshader|llvmpipe|lavapipe|softpipe|warp|software/i;

/** Is this GPUAdapter a CPU implementation (SwiftShader, lavapipe, ...)? Then the cpu_adapter profiles serve it. */
export function cpuAdapter(adapter) {
  const info = adapter?.info ?? {};
  if (info.isFallbackAdapter === true || adapter?.isFallbackAdapter === true) return true;
  return CPU_ADAPTER_NAMES.test([info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' '));
}

/**
 * The profile whose `user_agent` pattern matches first, in table order (Edge before Chrome, Chrome
 * before Safari). On a CPU adapter the cpu_adapter rows are tried first; elsewhere they never match.
 */
export function detectProfile(userAgent, profiles, cpu = false) {
  const rows = cpu ? [...profiles.filter((p) => p.cpu_adapter), ...profiles.filter((p) => !p.cpu_adapter)]
    : profiles.filter((p) => !p.cpu_adapter);
  for (const p of rows) {
    if (new RegExp(p.user_agent).test(userAgent)) return p.name;
  }
  return null;
}

/** Limits of `required` that `limits` (a GPUSupportedLimits or a plain object) does not reach, as text. */
export function shortfall(required, limits) {
  const missing = [];
  for (const [name, value] of Object.entries(required)) {
    const have = limits[name];
    if (have === undefined || have < value) missing.push(`${name} >= ${value} (adapter allows ${have})`);
  }
  return missing;
}

/**
 * Order the profiles to try on an adapter: the requested one if it fits, then every other
 * fitting profile, largest workgroup first (on a CPU adapter the cpu_adapter rows first; on any
 * other adapter they are never a fallback). `fallback` explains why the requested one was skipped.
 */
export function chooseProfiles(profiles, requestedName, limits, cpu = false) {
  const byName = new Map(profiles.map((p) => [p.name, p]));
  if (requestedName !== null && requestedName !== undefined && !byName.has(requestedName)) {
    throw new Error(`unknown profile '${requestedName}'; this bundle has ${profiles.map((p) => p.name).join(', ')}`);
  }
  const requested = byName.get(requestedName) ?? null;
  const others = profiles
    .filter((p) => p !== requested && (cpu || !p.cpu_adapter))
    .sort((a, b) => Number(Boolean(b.cpu_adapter)) - Number(Boolean(a.cpu_adapter))
      || b.workgroup_size - a.workgroup_size || a.name.localeCompare(b.name));
  const ordered = requested ? [requested, ...others] : others;
  const fitting = ordered.filter((p) => shortfall(p.limits, limits).length === 0);
  let fallback = null;
  if (requested && fitting[0] !== requested) {
    const missing = shortfall(requested.limits, limits).join(', ');
    fallback = fitting.length
      ? `${requested.variant} needs ${missing}; using ${fitting[0].variant}, the largest variant this adapter allows`
      : `${requested.variant} needs ${missing}; no variant fits this adapter`;
  }
  return { requested, candidates: fitting, fallback };
}

/**
 * The optional WebGPU features (profiles.py FEATURES) to request for `profile`: those some shader of
 * that profile in this bundle uses (its manifest.shaders entries' `features`) and `adapterFeatures`
 * (a GPUSupportedFeatures or any Set-like) offers, in the bundle's order; `allowed` (null: any)
 * narrows them. Negotiated like limits: the runtime requests these, then serves feature variants
 * only for the ones the device really has (profileShaders' `features`).
 */
export function chooseFeatures(manifest, profile, adapterFeatures, allowed = null, adapterInfo = null) {
  const shipped = [];
  for (const s of manifest.shaders) {
    if (s.profile !== profile || !policyAllows(manifest, s, adapterInfo)) continue;
    for (const f of s.features ?? []) if (!shipped.includes(f)) shipped.push(f);
  }
  const order = manifest.profiles.find((p) => p.name === profile)?.features ?? [];
  return shipped.filter((f) => adapterFeatures?.has?.(f) && (allowed === null || allowed.includes(f)))
    .sort((a, b) => order.indexOf(a) - order.indexOf(b));
}

/**
 * Whether a shader entry may run on the adapter `info` (GPUAdapterInfo) as far as the manifest's
 * feature_policy goes (profiles.FEATURE_POLICY): for each feature it uses, the rows whose vendor the
 * adapter's info names list the kernels and weight formats where that feature measured faster; on
 * such an adapter it runs only there. Base entries, and adapters no row names, always may.
 */
export function policyAllows(manifest, shader, info) {
  const named = [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ').toLowerCase();
  for (const feature of shader.features ?? []) {
    const rows = (manifest.feature_policy ?? []).filter((r) => r.feature === feature && named.includes(r.vendor));
    const format = shader.weight?.format ?? null;
    if (rows.length && !rows.some((r) => r.kernels.includes(shader.kernel) && r.formats.includes(format))) return false;
  }
  return true;
}

/**
 * The shaders a page on `profile` compiles: every kernel key the model graph names for it (each
 * matrix-product size class, each table, each operator) as manifest.shaders entries, sorted by key,
 * and the distinct manifest.shader_files entries behind them: several keys may share one file
 * (profiles that render the same WGSL), which is then fetched once. Other profiles' files are
 * never named. `features`: the optional features the device has; a key then runs its variant that
 * uses the most of them (entries whose base_key is the key and whose features are all there),
 * served under the graph's key (`variant_key` names the entry that runs). Without features, or in a
 * bundle that ships no feature variants, every key runs its own entry.
 */
export function profileShaders(manifest, profile, features = [], adapterInfo = null) {
  const keys = new Set(Object.values(manifest.model.op_kernels?.[profile] ?? {}));
  for (const has of ['in_features', 'table']) {
    for (const node of graphNodes(manifest.model, has)) {
      if (node.parts) continue; // a table in row blocks (graphs.js embedTable): its parts, walked too, name them
      for (const key of Object.values(node.kernels[profile])) keys.add(key);
    }
  }
  const byKey = new Map(manifest.shaders.map((s) => [s.key, s]));
  const variantsOf = new Map();
  for (const s of manifest.shaders) {
    const used = s.features ?? [];
    if (!used.length || !used.every((f) => features.includes(f)) || !policyAllows(manifest, s, adapterInfo)) continue;
    const best = variantsOf.get(s.base_key);
    if (!best || used.length > best.features.length) variantsOf.set(s.base_key, s);
  }
  const shaders = [...keys].sort().map((key) => {
    if (!byKey.has(key)) throw new Error(`the manifest has no shader ${key}`);
    const variant = variantsOf.get(key);
    return variant ? { ...variant, key, variant_key: variant.key } : byKey.get(key);
  });
  const listed = new Map(manifest.shader_files.map((f) => [f.file, f]));
  const files = [...new Set(shaders.map((s) => s.file))].map((file) => listed.get(file));
  return { shaders, files };
}
