// In-memory stand-ins for the DTI's devices and for iproute2/sysctl, so the node's forwarding decisions run
// without root (as wireguard-go's tests inject a tun.Device). A mock only because a TUN device and raw sockets
// need CAP_NET_ADMIN/CAP_NET_RAW; the e2e tests run the same code on real devices in namespaces.
import type { RxBatch } from '../../src/dti/device';
import type { IpCommand } from '../../src/dti/netconfig';
import { HEADROOM } from '../../src/dti/packet';
import type { DtiDevices, DtiSystem } from '../../src/node/dti-node';
import { batchOf } from '../dti/build';

/** A device: packets pushed in with receive(), packets the code sends kept in `sent`. */
export class FakeDevice {
  readonly txStatus = new Int32Array(3);
  readonly sent: number[][] = [];
  closed = false;
  private handler: ((count: number, rx: RxBatch) => void) | undefined;

  constructor(
    public name: string,
    private readonly headroom: number,
  ) {}

  onBatch(cb: (count: number, rx: RxBatch) => void): void {
    this.handler = cb;
  }

  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    for (let i = 0; i < count; i++) this.sent.push([...buf.subarray(offsets[i], offsets[i] + lengths[i])]);
    this.txStatus[0] = count;
    this.txStatus[1] = 0;
    return count;
  }

  /** Packets arriving from the kernel (the TUN device's IPv4, or the raw socket's whole IPv6 packets). */
  receive(...packets: number[][]): void {
    if (!this.handler) throw new Error(`${this.name}: nobody reads`);
    this.handler(packets.length, batchOf(packets, this.headroom));
  }

  /** What was sent since the last take(). */
  take(): number[][] {
    return this.sent.splice(0);
  }

  close(): void {
    this.closed = true;
  }
}

export interface FakeDti {
  tun: FakeDevice;
  raw: FakeDevice;
  icmp6: FakeDevice;
  /** Every iproute2 command line and sysctl, in order. */
  commands: string[];
  devices: (o: { name: string }) => DtiDevices;
  system: DtiSystem;
}

export function fakeDti(): FakeDti {
  const commands: string[] = [];
  const f: FakeDti = {
    tun: new FakeDevice('tun', HEADROOM),
    raw: new FakeDevice('raw', 0),
    icmp6: new FakeDevice('icmp6', 0),
    commands,
    devices: (o) => {
      f.tun.name = o.name;
      return { tun: f.tun, raw: f.raw, icmp6: f.icmp6 };
    },
    system: {
      ip: async (cmds: readonly IpCommand[]) => void commands.push(...cmds.map((c) => c.args.join(' '))),
      sysctl: (key, value) => void commands.push(`sysctl ${key}=${value}`),
    },
  };
  return f;
}
