// Loader of the project's N-API addon (native/*.c, built by node-gyp from binding.gyp at `npm ci`), shared by its
// users: the DTI's device I/O (src/dti/native.ts), sd_notify (src/lib/sd-notify.ts) and the RPC server's batched UDP
// (src/rpc/udp-batch.ts). Each user declares the part of the addon it calls.
import { join, sep } from 'node:path';

let cached: object | undefined;

/** The addon module; throws an explanatory error if it was not built. */
export function loadAddon(): object {
  if (cached) return cached;
  // src/lib when run from source (tsx), dist/src/lib when compiled: the package root is two or three levels up.
  const root = join(__dirname, __dirname.split(sep).includes('dist') ? '../../..' : '../..');
  const path = join(root, 'build', 'Release', 'dstm_native.node');
  try {
    cached = require(path) as object;
  } catch (err) {
    throw new Error(
      `dstm: the native addon is missing or cannot load (${path}): ${(err as Error).message}. ` +
        'Build it with `npm ci` or `npm rebuild` (needs python3, make and a C compiler).',
    );
  }
  return cached;
}
