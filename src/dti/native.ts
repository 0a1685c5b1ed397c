// Types of the device I/O part of the addon (native/dstm_native.c, loaded by src/lib/addon.ts). Only src/dti/device.ts
// calls it directly.
import { loadAddon } from '../lib/addon';

/** Opaque handles owned by the addon. */
export type ReaderHandle = { readonly __reader: unique symbol };
export type SenderHandle = { readonly __sender: unique symbol };

export const KIND_TUN = 0;
export const KIND_RAW = 1;
/** A TUN fd with IFF_VNET_HDR: the virtio-net header is read into the 10 bytes before the packet. */
export const KIND_TUN_VNET = 2;

export interface NativeAddon {
  /**
   * Creates/attaches TUN device `name` ('' = kernel picks); non-blocking fd. With `offload`, IFF_VNET_HDR and
   * TUNSETOFFLOAD: returns the TUN_F_* flags the kernel took (0: it refused, the device is plain). With
   * `multiQueue` (IFF_MULTI_QUEUE), opening an existing device attaches one more queue to it.
   */
  openTun(name: string, offload: boolean, multiQueue: boolean): [number, string, number];
  setMtu(ifname: string, mtu: number): void;
  /**
   * Raw AF_INET6 socket for `protocol` (4: IPV6_HDRINCL on; 58: ICMPv6 errors only), optionally bound, with
   * receive and send buffers of `bufferBytes`.
   */
  openRaw6(protocol: number, bindAddr: Uint8Array | null, device: string, bufferBytes: number): number;
  closeFd(fd: number): void;
  /** A raw IPIP socket keeps only the packets whose inner flow hashes to `queue` of `count` (classic BPF). */
  attachQueueFilter(fd: number, queue: number, count: number): void;
  startReader(
    fd: number,
    kind: number,
    slots: Uint8Array,
    slotSize: number,
    headroom: number,
    lengths: Uint32Array,
    maxBatch: number,
    protocol: number,
    /** TUN only: read through io_uring where the kernel has it (else, or on failure, a read() loop). */
    uring: boolean,
    onBatch: (count: number) => void,
  ): ReaderHandle;
  stopReader(h: ReaderHandle): void;
  /** With `uring` (a TUN device), writes go through io_uring where the kernel has it: the flag says if it does. */
  newSender(maxBatch: number, uring: boolean): [SenderHandle, boolean];
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

/** The addon; throws an explanatory error if it was not built. */
export function native(): NativeAddon {
  return loadAddon() as NativeAddon;
}
