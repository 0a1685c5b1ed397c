// RPC message, authentication, record-marking and universal-address codecs, byte for byte against RFC 5531/5665.
import { expect } from 'chai';
import {
  AuthSys,
  authSysServer,
  decodeAuthSys,
  encodeAuthSys,
  fromUniversalAddress,
  toUniversalAddress,
  AuthStat,
  NULL_AUTH,
  type AuthSysParams,
} from '../../src/rpc';
import {
  readCallHeader,
  readReplyHeader,
  writeCallHeader,
  writeReplyHeader,
  type ReplyHeader,
} from '../../src/rpc/message';
import { DRC_IN_PROGRESS, DRC_NEW, DRC_REPLAY, DuplicateCache } from '../../src/rpc/drc';
import { frameRecord, RecordReader } from '../../src/rpc/record';
import { XdrReader, XdrWriter } from '../../src/rpc/xdr/runtime';

function words(b: Uint8Array): number[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return Array.from({ length: b.length / 4 }, (_, i) => v.getUint32(i * 4));
}

describe('rpc messages (RFC 5531 section 9)', () => {
  it('encodes a call header word for word and reads it back', () => {
    const w = new XdrWriter();
    const cred = { flavor: 1, body: new Uint8Array([1, 2, 3, 4, 5]) };
    writeCallHeader(w, {
      xid: 0xdeadbeef,
      program: 100003,
      version: 3,
      procedure: 1,
      credential: cred,
      verifier: NULL_AUTH,
    });
    expect(words(w.toBytes())).to.deep.equal([0xdeadbeef, 0, 2, 100003, 3, 1, 1, 5, 0x01020304, 0x05000000, 0, 0]);
    const h = readCallHeader(new XdrReader(w.toBytes()));
    expect(h).to.deep.include({ xid: 0xdeadbeef, program: 100003, version: 3, procedure: 1 });
    expect('credential' in h && Array.from(h.credential.body)).to.deep.equal([1, 2, 3, 4, 5]);
  });

  it('reports a wrong RPC version without reading the rest, and rejects non-calls and cut headers', () => {
    expect(readCallHeader(new XdrReader(new Uint8Array([0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3])))).to.deep.equal({
      xid: 7,
      rpcVersion: 3,
    });
    expect(() => readCallHeader(new XdrReader(new Uint8Array([0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2])))).to.throw(
      /expected CALL/,
    );
    expect(() => readCallHeader(new XdrReader(new Uint8Array([0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0])))).to.throw(
      /needs 4 bytes/,
    );
    // an opaque_auth body over 400 bytes
    const w = new XdrWriter();
    for (const v of [1, 0, 2, 9, 1, 0, 0, 401]) w.uint(v);
    w.ensure(404);
    w.pos += 404;
    expect(() => readCallHeader(new XdrReader(w.toBytes()))).to.throw(/exceeds the maximum of 400/);
  });

  const replies: [ReplyHeader, number[]][] = [
    [{ xid: 1, status: 'SUCCESS', verifier: NULL_AUTH }, [1, 1, 0, 0, 0, 0]],
    [{ xid: 2, status: 'PROG_UNAVAIL', verifier: NULL_AUTH }, [2, 1, 0, 0, 0, 1]],
    [{ xid: 3, status: 'PROG_MISMATCH', verifier: NULL_AUTH, low: 1, high: 4 }, [3, 1, 0, 0, 0, 2, 1, 4]],
    [{ xid: 4, status: 'PROC_UNAVAIL', verifier: NULL_AUTH }, [4, 1, 0, 0, 0, 3]],
    [{ xid: 5, status: 'GARBAGE_ARGS', verifier: NULL_AUTH }, [5, 1, 0, 0, 0, 4]],
    [{ xid: 6, status: 'SYSTEM_ERR', verifier: NULL_AUTH }, [6, 1, 0, 0, 0, 5]],
    [{ xid: 7, status: 'RPC_MISMATCH', low: 2, high: 2 }, [7, 1, 1, 0, 2, 2]],
    [{ xid: 8, status: 'AUTH_ERROR', stat: AuthStat.AUTH_TOOWEAK }, [8, 1, 1, 1, 5]],
  ];
  for (const [h, wire] of replies) {
    it(`round-trips a ${h.status} reply`, () => {
      const w = new XdrWriter();
      writeReplyHeader(w, h);
      expect(words(w.toBytes())).to.deep.equal(wire);
      const r = new XdrReader(w.toBytes());
      expect(readReplyHeader(r)).to.deep.equal(h);
      expect(r.remaining).to.equal(0);
    });
  }

  it('rejects replies with unknown statuses', () => {
    const bad = [
      [1, 1, 0, 0, 0, 6],
      [1, 1, 2],
      [1, 1, 1, 2],
      [1, 0, 0],
    ];
    for (const b of bad) {
      const w = new XdrWriter();
      for (const v of b) w.uint(v);
      expect(() => readReplyHeader(new XdrReader(w.toBytes())), JSON.stringify(b)).to.throw();
    }
  });
});

describe('AUTH_SYS (RFC 5531 Appendix A)', () => {
  const params = { stamp: 42, machinename: 'host', uid: 1000, gid: 100, gids: [4, 24] };

  it('encodes authsys_parms and decodes them strictly', () => {
    const body = encodeAuthSys(params);
    expect(words(body)).to.deep.equal([42, 4, 0x686f7374, 1000, 100, 2, 4, 24]);
    expect(decodeAuthSys(body)).to.deep.equal(params);
    expect(authSysServer.validate({ flavor: 1, body }, NULL_AUTH)).to.deep.equal({ principal: params });
    expect(authSysServer.validate({ flavor: 1, body: body.subarray(0, 12) }, NULL_AUTH)).to.equal(
      AuthStat.AUTH_BADCRED,
    );
    expect(authSysServer.validate({ flavor: 1, body: new Uint8Array([...body, 0, 0, 0, 0]) }, NULL_AUTH)).to.equal(
      AuthStat.AUTH_BADCRED,
    );
  });

  it('decodes a machine name byte for byte (Latin-1, not UTF-8), as libtirpc takes it', () => {
    const w = new XdrWriter();
    w.uint(42);
    w.varOpaque(new Uint8Array([0x68, 0xf4, 0x74, 0x65])); // "h\u00f4te" in Latin-1: not valid UTF-8
    for (const v of [1000, 100, 0]) w.uint(v);
    const got = authSysServer.validate({ flavor: 1, body: w.toBytes() }, NULL_AUTH) as { principal: AuthSysParams };
    expect(got.principal).to.deep.equal({ stamp: 42, machinename: 'h\u00f4te', uid: 1000, gid: 100, gids: [] });
    expect([...Buffer.from(got.principal.machinename, 'latin1')]).to.deep.equal([0x68, 0xf4, 0x74, 0x65]);
  });

  it('refuses more than 16 groups and machine names over 255 bytes, in plain words', () => {
    expect(() => encodeAuthSys({ ...params, gids: new Array(17).fill(1) })).to.throw(
      RangeError,
      /at most 16 groups; 17 given/,
    );
    expect(() => new AuthSys({ ...params, machinename: 'x'.repeat(256) })).to.throw(
      RangeError,
      /256 bytes; at most 255/,
    );
    expect(
      new AuthSys({ ...params, gids: new Array(16).fill(1), machinename: 'x'.repeat(255) }).credential().body.length,
    ).to.equal(4 + 4 + 256 + 4 + 4 + 4 + 64);
    // a received credential with 17 groups is a bad credential
    const w = new XdrWriter();
    for (const v of [1, 0, 0, 0, 17]) w.uint(v);
    for (let i = 0; i < 17; i++) w.uint(i);
    expect(authSysServer.validate({ flavor: 1, body: w.toBytes() }, NULL_AUTH)).to.equal(AuthStat.AUTH_BADCRED);
  });
});

describe('record marking (RFC 5531 section 11)', () => {
  function collect(max: number) {
    const records: Buffer[] = [];
    return { records, reader: new RecordReader(max, (r) => records.push(Buffer.from(r))) };
  }

  it('splits a message into fragments and reassembles it fed one byte at a time', () => {
    const msg = Buffer.from(Array.from({ length: 1000 }, (_, i) => i & 255));
    const framed = frameRecord(msg, 64);
    expect(framed.length).to.equal(1000 + 4 * 16);
    expect(framed.readUInt32BE(0)).to.equal(64);
    expect(framed.readUInt32BE(framed.length - (1000 - 15 * 64) - 4)).to.equal((0x80000000 | (1000 - 15 * 64)) >>> 0);
    const { records, reader } = collect(4096);
    for (let i = 0; i < framed.length; i++) expect(reader.push(framed.subarray(i, i + 1))).to.equal(null);
    expect(records).to.have.length(1);
    expect(records[0].equals(msg)).to.equal(true);
  });

  it('delivers several records from one chunk, including an empty one', () => {
    const { records, reader } = collect(100);
    reader.push(
      Buffer.concat([
        frameRecord(Buffer.from('abcd'), 2),
        frameRecord(Buffer.alloc(0), 8),
        frameRecord(Buffer.from('efgh'), 100),
      ]),
    );
    expect(records.map((r) => r.toString())).to.deep.equal(['abcd', '', 'efgh']);
  });

  it('cuts off a fragment header that announces more than the maximum, before buffering', () => {
    const { records, reader } = collect(1 << 20);
    const head = Buffer.alloc(8);
    head.writeUInt32BE(0xffffffff, 0); // last fragment, 2 GiB - 1 bytes
    expect(reader.push(head)).to.match(/2147483647 bytes.*over the maximum of 1048576/);
    expect(reader.buffered).to.equal(0);
    expect(records).to.have.length(0);
  });

  it('counts earlier fragments of the record against the maximum', () => {
    const { reader } = collect(100);
    expect(reader.push(frameRecord(Buffer.alloc(120), 60).subarray(0, 64))).to.equal(null); // not the last: 60 buffered
    const head = Buffer.alloc(4);
    head.writeUInt32BE((0x80000000 | 41) >>> 0);
    expect(reader.push(head)).to.match(/record of 101 bytes/);
  });

  it('keeps what follows the record during which it was stopped (a ClientHello after a TLS probe), once', () => {
    const after = Buffer.from('\x16\x03\x01 not records');
    // One-fragment record (handed over as a view) and a record of fragments (copied), each followed by other bytes.
    for (const framed of [frameRecord(Buffer.from('probe'), 100), frameRecord(Buffer.from('probe'), 2)]) {
      const records: string[] = [];
      const reader: RecordReader = new RecordReader(100, (r) => {
        records.push(r.toString());
        reader.stop();
      });
      expect(reader.push(Buffer.concat([framed, after, frameRecord(Buffer.from('next'), 100)]))).to.equal(null);
      expect(records).to.deep.equal(['probe']);
      expect(reader.takeRest()?.equals(Buffer.concat([after, frameRecord(Buffer.from('next'), 100)]))).to.equal(true);
      expect(reader.takeRest()).to.equal(null);
      reader.push(after); // stopped already: neither delivered nor kept
      expect(reader.takeRest()).to.equal(null);
    }
    const reader: RecordReader = new RecordReader(100, () => reader.stop());
    reader.push(frameRecord(Buffer.from('probe'), 100)); // nothing after it
    expect(reader.takeRest()).to.equal(null);
  });
});

describe('universal addresses (RFC 5665)', () => {
  it('formats and parses IPv6 and IPv4 universal addresses', () => {
    expect(toUniversalAddress('::1', 2049)).to.equal('::1.8.1');
    expect(toUniversalAddress('192.0.2.1', 111)).to.equal('192.0.2.1.0.111');
    expect(fromUniversalAddress('fe80::1.255.255')).to.deep.equal({ address: 'fe80::1', port: 65535 });
    expect(fromUniversalAddress('0.0.0.0.0.111')).to.deep.equal({ address: '0.0.0.0', port: 111 });
    for (const bad of ['', '::1', '::1.256.1', 'host.1.2', '1.2.3.4.5'])
      expect(() => fromUniversalAddress(bad), bad).to.throw(RangeError);
  });
});

describe('duplicate request cache', () => {
  const call = (xid: number, arg: number) => {
    const b = Buffer.alloc(44);
    b.writeUInt32BE(xid, 0);
    b.writeUInt32BE(arg, 40);
    return b;
  };

  it('finds a retransmission by XID, peer and content, and replays its reply', () => {
    const c = new DuplicateCache(8, 1024);
    expect(c.lookup('::1', 700, 1, call(1, 5))).to.equal(DRC_NEW);
    const tok = c.begin(700, 1);
    expect(c.lookup('::1', 700, 1, call(1, 5))).to.equal(DRC_IN_PROGRESS);
    c.complete(tok, Buffer.from('reply-1'));
    expect(c.lookup('::1', 700, 1, call(1, 5))).to.equal(DRC_REPLAY);
    expect(c.replay!.toString()).to.equal('reply-1');
    // another peer, port, or content is another call
    expect(c.lookup('::2', 700, 1, call(1, 5))).to.equal(DRC_NEW);
    expect(c.lookup('::1', 701, 1, call(1, 5))).to.equal(DRC_NEW);
    expect(c.lookup('::1', 700, 1, call(1, 6))).to.equal(DRC_NEW);
  });

  it('forgets the oldest entries past its entry and byte bounds, and keeps no reply over a quarter of its bytes', () => {
    const c = new DuplicateCache(4, 64);
    const serve = (xid: number, reply: Buffer) => {
      expect(c.lookup('::1', 9, xid, call(xid, 0))).to.equal(DRC_NEW);
      c.complete(c.begin(9, xid), reply);
    };
    for (let x = 1; x <= 5; x++) serve(x, Buffer.alloc(8, x));
    expect(c.entries).to.equal(4);
    expect(c.lookup('::1', 9, 1, call(1, 0))).to.equal(DRC_NEW); // slot reused by call 5
    expect(c.lookup('::1', 9, 5, call(5, 0))).to.equal(DRC_REPLAY);
    // 64 bytes for replies: after four more 16-byte replies the first of them has been written over
    for (let x = 10; x < 14; x++) serve(x, Buffer.alloc(16, x));
    expect(c.lookup('::1', 9, 10, call(10, 0))).to.equal(DRC_NEW);
    expect(c.lookup('::1', 9, 13, call(13, 0))).to.equal(DRC_REPLAY);
    expect(c.replay!.equals(Buffer.alloc(16, 13))).to.equal(true);
    serve(20, Buffer.alloc(17));
    expect(c.lookup('::1', 9, 20, call(20, 0))).to.equal(DRC_NEW);
  });

  it('tells calls apart by their whole content, past a long credential', () => {
    const c = new DuplicateCache(8, 1024);
    const long = (arg: number) => {
      const b = Buffer.alloc(600);
      b.writeUInt32BE(3, 0);
      b.writeUInt32BE(arg, 596);
      return b;
    };
    expect(c.lookup('::1', 9, 3, long(1))).to.equal(DRC_NEW);
    c.complete(c.begin(9, 3), Buffer.from('reply to 1'));
    expect(c.lookup('::1', 9, 3, long(1))).to.equal(DRC_REPLAY);
    expect(c.lookup('::1', 9, 3, long(2))).to.equal(DRC_NEW);
  });

  it('never forgets a call still running: not for other calls in its index bucket, nor when the ring comes round', () => {
    // 200 calls running at once in 1024 buckets: some share a bucket (about 20 pairs), none may hide another.
    const many = new DuplicateCache(256, 1 << 16);
    for (let x = 1; x <= 200; x++) {
      expect(many.lookup('::1', 9, x, call(x, x))).to.equal(DRC_NEW);
      expect(many.begin(9, x)).to.be.at.least(0);
    }
    for (let x = 1; x <= 200; x++) expect(many.lookup('::1', 9, x, call(x, x)), `call ${x}`).to.equal(DRC_IN_PROGRESS);

    const c = new DuplicateCache(4, 1024);
    c.lookup('::1', 9, 1, call(1, 0));
    const slow = c.begin(9, 1);
    for (let x = 10; x < 20; x++) {
      c.lookup('::1', 9, x, call(x, 0));
      c.complete(c.begin(9, x), Buffer.alloc(8, x));
      expect(c.lookup('::1', 9, 1, call(1, 0)), `after call ${x}`).to.equal(DRC_IN_PROGRESS);
    }
    // Every entry running: a new call gets no entry (the server drops it), until one of them is done.
    for (const x of [2, 3, 4]) {
      c.lookup('::1', 9, x, call(x, 0));
      expect(c.begin(9, x)).to.be.at.least(0);
    }
    expect(c.lookup('::1', 9, 5, call(5, 0))).to.equal(DRC_NEW);
    expect(c.begin(9, 5)).to.equal(-1);
    c.complete(slow, Buffer.from('slow'));
    expect(c.lookup('::1', 9, 1, call(1, 0))).to.equal(DRC_REPLAY);
    expect(c.lookup('::1', 9, 5, call(5, 0))).to.equal(DRC_NEW);
    const five = c.begin(9, 5);
    expect(five).to.be.at.least(0);
    // A call ended without a reply kept (replying threw) stops running: its retransmission runs, its entry is reused.
    c.end(five);
    expect(c.lookup('::1', 9, 5, call(5, 0))).to.equal(DRC_NEW);
    expect(c.begin(9, 5)).to.be.at.least(0);
  });
});
