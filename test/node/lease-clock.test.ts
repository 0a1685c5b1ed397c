// The node's lease clock (LeaseKeeper.leaseAge) starts when the REQUEST was first sent, not when the reply came: with
// retransmissions the reply can come up to the whole call timeout later, and the server counted the lease from
// somewhere in between. A UDP socket stands in for the server and answers only from the retransmission on.
import { expect } from 'chai';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { DstmClient, type Lease } from '../../src/protocol/client';
import { LeaseKeeper } from '../../src/node/lease-keeper';
import { xdr_dstm_reply } from '../../src/protocol/generated/dstm';
import { NULL_AUTH } from '../../src/rpc';
import { writeAcceptedReply } from '../../src/rpc/message';
import { XdrWriter } from '../../src/rpc/xdr/runtime';
import { parseIPv6 } from '../../src/lib/addr';

describe('lease clock', () => {
  it('counts a lease from the first transmission of the REQUEST, not from the reply to its retransmission', async () => {
    const server = dgram.createSocket('udp6');
    server.bind(0, '::1');
    await once(server, 'listening');
    const arrivals: number[] = [];
    server.on('message', (msg, from) => {
      arrivals.push(performance.now());
      if (arrivals.length === 1) return; // the REQUEST's first transmission is "lost"
      const w = new XdrWriter();
      writeAcceptedReply(w, msg.readUInt32BE(0), NULL_AUTH, 0);
      xdr_dstm_reply.encode(w, {
        status: 0,
        lease: {
          type: 2,
          local: parseIPv6('::1'),
          mask: new Uint8Array([255, 255, 255, 255]),
          i4addr: new Uint8Array([10, 9, 0, 1]),
          tep4: new Uint8Array([192, 0, 2, 1]),
          tep6: parseIPv6('2001:db8::1'),
          starts: 1000,
          ends: 1600,
          extend: 300,
          keep: 600,
        },
      });
      server.send(w.view0(), from.port, from.address);
    });
    const c = await DstmClient.connect({ host: '::1', port: server.address().port, program: 0x2d53544d, local: '::1' });
    const keeper = new LeaseKeeper(c);
    keeper.on('error', () => undefined);
    try {
      let ageAtArrival = 0;
      let sinceFirstSend = 0;
      keeper.once('lease', () => {
        ageAtArrival = keeper.leaseAge;
        sinceFirstSend = performance.now() - arrivals[0];
      });
      const lease: Lease = await keeper.start();
      expect(arrivals).to.have.length(2);
      expect(arrivals[1] - arrivals[0]).to.be.above(400); // answered only after the retransmission (500 ms)
      expect(lease.address).to.equal('10.9.0.1');
      // Counted from before the first send (the keeper reads its clock first), so at least as old as that send is.
      expect(ageAtArrival).to.be.at.least(sinceFirstSend);
    } finally {
      await keeper.stop();
      await c.close();
      server.close();
    }
  });
});
