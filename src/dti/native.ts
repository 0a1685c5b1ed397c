// Loader and types for the device I/O addon (native/dstm_native.c, built by node-gyp from binding.gyp at
// `npm ci`). Only src/dti/device.ts calls it directly.
import { join, sep } from 'node:path';

/** Opaque handles owned by the addon. */
export type ReaderHandle = { readonly __reader: unique symbol };
export type SenderHandle = { readonly __sender: unique symbol };

export const KIND_TUN = 0;
export const KIND_RAW = 1;

export interface NativeAddon {
  /** Creates/attaches TUN device `name` ('' = kernel picks); non-blocking fd. Returns [fd, actual name]. */
  openTun(name: string): [number, string];
  setMtu(ifname: string, mtu: number): void;
  /** Raw AF_INET6 socket for `protocol` (4: IPV6_HDRINCL on; 58: ICMPv6 errors only), optionally bound. */
  openRaw6(protocol: number, bindAddr: Uint8Array | null, device: string): number;
  closeFd(fd: number): void;
  startReader(
    fd: number,
    kind: number,
    slots: Uint8Array,
    slotSize: number,
    headroom: number,
    lengths: Uint32Array,
    maxBatch: number,
    protocol: number,
    onBatch: (count: number) => void,
  ): ReaderHandle;
  stopReader(h: ReaderHandle): void;
  newSender(maxBatch: number): SenderHandle;
  sendBatch(
    s: SenderHandle,
    fd: number,
    kind: number,
    buf: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    count: number,
    status: Int32Array,
  ): number;
}

let cached: NativeAddon | undefined;

/** The addon; throws an explanatory error if it was not built. */
export function native(): NativeAddon {
  if (cached) return cached;
  // src/dti when run from source (tsx), dist/src/dti when compiled: the package root is two or three levels up.
  const root = join(__dirname, __dirname.split(sep).includes('dist') ? '../../..' : '../..');
  const path = join(root, 'build', 'Release', 'dstm_native.node');
  try {
    cached = require(path) as NativeAddon;
  } catch (err) {
    throw new Error(
      `dstm: the device I/O addon is missing or cannot load (${path}): ${(err as Error).message}. ` +
        'Build it with `npm ci` or `npm rebuild` (needs python3, make and a C compiler).',
    );
  }
  return cached;
}
