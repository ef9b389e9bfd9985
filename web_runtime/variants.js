// Which shader variant (browser profile) to run: the profile named by the caller or matched from
// the user agent, checked against the adapter's real limits, falling back to the largest variant
// that fits. Pure functions over the manifest's profile table, so they are testable without a GPU.

/** The profile whose `user_agent` pattern matches first, in table order (Edge before Chrome, Chrome before Safari). */
export function detectProfile(userAgent, profiles) {
  for (const p of profiles) {
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
 * fitting profile, largest workgroup first. `fallback` explains why the requested one was skipped.
 */
export function chooseProfiles(profiles, requestedName, limits) {
  const byName = new Map(profiles.map((p) => [p.name, p]));
  if (requestedName !== null && requestedName !== undefined && !byName.has(requestedName)) {
    throw new Error(`unknown profile '${requestedName}'; this bundle has ${profiles.map((p) => p.name).join(', ')}`);
  }
  const requested = byName.get(requestedName) ?? null;
  const others = profiles
    .filter((p) => p !== requested)
    .sort((a, b) => b.workgroup_size - a.workgroup_size || a.name.localeCompare(b.name));
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
