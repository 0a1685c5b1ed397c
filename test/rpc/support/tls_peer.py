#!/usr/bin/env python3
"""An RPC-with-TLS (RFC 9289) peer written apart from dstm, on Python's ssl module (OpenSSL), for the tests.

client HOST PORT PROGRAM VERSION [options]: send the AUTH_TLS probe in plain text, check the STARTTLS verifier, run
  TLS 1.3 with ALPN "sunrpc" on the same socket, then make one call inside TLS (--proc, --args hex) and print a JSON
  line {"stage": ..., ...} saying how far it got and what the server answered.
  --garbage: after STARTTLS send bytes that are not a ClientHello and report whether the server closed.
  --stall: after STARTTLS send nothing and report after how many seconds the server closed.
  --plain: skip the probe, make the call in plain text.
server PORT [options]: serve one connection on ::1: answer the probe with STARTTLS (or, with --no-tls, accept it
  with an empty verifier as a server without TLS may), handshake, then answer every call SUCCESS with its arguments
  echoed as results. Prints "listening PORT" when ready.
"""
import argparse
import json
import os
import socket
import ssl
import struct
import sys
import time

AUTH_NONE, AUTH_TLS = 0, 7


def record(msg):
    return struct.pack('>I', 0x80000000 | len(msg)) + msg


def read_exact(s, n):
    out = b''
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise EOFError('connection closed')
        out += b
    return out


def read_record(s):
    out = b''
    while True:
        (h,) = struct.unpack('>I', read_exact(s, 4))
        out += read_exact(s, h & 0x7FFFFFFF)
        if h & 0x80000000:
            return out


def call(xid, prog, vers, proc, cred_flavor=AUTH_NONE, args=b''):
    return struct.pack('>IIIIIIIIII', xid, 0, 2, prog, vers, proc, cred_flavor, 0, AUTH_NONE, 0) + args


def parse_reply(rec):
    xid, mtype, rstat = struct.unpack('>III', rec[:12])
    if rstat == 1:
        return {'xid': xid, 'denied': True, 'reject': struct.unpack('>I', rec[12:16])[0], 'stat': struct.unpack('>I', rec[16:20])[0]}
    flavor, blen = struct.unpack('>II', rec[12:20])
    body = rec[20:20 + blen]
    off = 20 + blen + (-blen % 4)
    (astat,) = struct.unpack('>I', rec[off:off + 4])
    return {'xid': xid, 'denied': False, 'verf_flavor': flavor, 'verf': body.decode('latin1'), 'accept': astat, 'results': rec[off + 4:].hex()}


def out(**kw):
    print(json.dumps(kw), flush=True)


def client(a):
    s = socket.create_connection((a.host, a.port), timeout=a.timeout)
    if a.plain:
        s.sendall(record(call(1, a.program, a.version, a.proc, args=bytes.fromhex(a.args))))
        return out(stage='plain', reply=parse_reply(read_record(s)))
    s.sendall(record(call(0x7150, a.program, a.version, 0, cred_flavor=AUTH_TLS)))
    r = parse_reply(read_record(s))
    if r['denied'] or r['accept'] != 0 or r['verf'] != 'STARTTLS':
        return out(stage='probe', reply=r)
    if a.garbage or a.stall:
        t0 = time.monotonic()
        if a.garbage:
            s.sendall(b'\x80\x00\x00\x28' + b'not a TLS ClientHello at all, sorry....')
        s.settimeout(a.timeout)
        try:
            closed = s.recv(4096) == b''
        except (ConnectionResetError, socket.timeout) as e:
            closed = isinstance(e, ConnectionResetError)
        return out(stage='after-starttls', closed=closed, seconds=round(time.monotonic() - t0, 2))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(['sunrpc'])
    ctx.load_verify_locations(a.ca)
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    try:
        t = ctx.wrap_socket(s, server_hostname=a.host)
        t.sendall(record(call(2, a.program, a.version, a.proc, args=bytes.fromhex(a.args))))
        rep = parse_reply(read_record(t))
    except (ssl.SSLError, EOFError, ConnectionResetError, OSError) as e:
        return out(stage='tls', error=str(e))
    out(stage='call', version=t.version(), alpn=t.selected_alpn_protocol(), reply=rep)


def server(a):
    ls = socket.socket(socket.AF_INET6)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(('::1', a.port))
    ls.listen(4)
    print(f'listening {ls.getsockname()[1]}', flush=True)
    c, _ = ls.accept()
    rec = read_record(c)
    xid, _m, _r, prog, vers, proc, flavor = struct.unpack('>IIIIIII', rec[:28])
    verf = b'' if a.no_tls else b'STARTTLS'
    c.sendall(record(struct.pack('>IIIII', xid, 1, 0, AUTH_NONE, len(verf)) + verf + struct.pack('>I', 0)))
    if a.no_tls:
        time.sleep(1)
        return
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(['sunrpc'])
    ctx.load_cert_chain(a.cert, a.key)
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except ssl.SSLError as e:
        print('handshake failed', e, flush=True)
        return
    while True:
        try:
            rec = read_record(t)
        except (EOFError, ssl.SSLError, ConnectionResetError):
            return
        xid = struct.unpack('>I', rec[:4])[0]
        clen = struct.unpack('>I', rec[28:32])[0]
        off = 32 + clen + (-clen % 4)
        vlen = struct.unpack('>I', rec[off + 4:off + 8])[0]
        off += 8 + vlen + (-vlen % 4)
        t.sendall(record(struct.pack('>IIIIII', xid, 1, 0, AUTH_NONE, 0, 0) + rec[off:]))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest='mode', required=True)
    c = sub.add_parser('client')
    c.add_argument('host')
    c.add_argument('port', type=int)
    c.add_argument('program', type=int)
    c.add_argument('version', type=int)
    c.add_argument('--proc', type=int, default=0)
    c.add_argument('--args', default='')
    c.add_argument('--ca')
    c.add_argument('--cert')
    c.add_argument('--key')
    c.add_argument('--garbage', action='store_true')
    c.add_argument('--stall', action='store_true')
    c.add_argument('--plain', action='store_true')
    c.add_argument('--timeout', type=float, default=5)
    s = sub.add_parser('server')
    s.add_argument('port', type=int)
    s.add_argument('--cert')
    s.add_argument('--key')
    s.add_argument('--no-tls', action='store_true')
    a = p.parse_args()
    (client if a.mode == 'client' else server)(a)


if __name__ == '__main__':
    main()
