/** The iTwin.js version rules (README "Versions"), as `tether.is_version_compatible`. */

const SEMVER = /^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;

/** Whether a frontend built against `frontend` may call a backend serving `backend` (false for text that is not semver). */
export function isVersionCompatible(backend: string, frontend: string): boolean {
  if (backend === frontend) return true;
  const b = SEMVER.exec(backend);
  const f = SEMVER.exec(frontend);
  if (b === null || f === null) return false;
  const [bMajor, bMinor, bPatch] = [Number(b[1]), Number(b[2]), Number(b[3])];
  const [fMajor, fMinor, fPatch] = [Number(f[1]), Number(f[2]), Number(f[3])];
  const sameCore = bMajor === fMajor && bMinor === fMinor && bPatch === fPatch;
  if (sameCore && b[4] === f[4]) return true; // build metadata aside
  if (b[4] !== undefined || f[4] !== undefined) return false;
  if (bMajor !== fMajor) return false;
  if (bMajor === 0) return bMinor === fMinor && fPatch <= bPatch;
  return fMinor <= bMinor;
}
