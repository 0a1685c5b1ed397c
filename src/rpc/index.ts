// Public API of the ONC RPC runtime (RFC 5531): client, server, authentication flavors, errors and rpcbind helpers.
// Generated code (rpcgen-ts) builds on ./types and ./xdr/runtime; applications use what is exported here.
//
//   const server = new RpcServer({ maxInFlight: 256 }).register(RPC_ONE_service(handlers), programOverride);
//   server.register(RPC_TWO_service(h2), program, { procedures: { REVOKE: { tcpOnly: true } } });  // per procedure
//   await server.listen([{ host: '::', port: 0 }]);          // UDP and TCP on one port; IPv4 only if listed
//   await server.registerWithRpcbind();                      // close() unregisters
//   server.stats();                                          // plain-object counters for metrics
//
//   const rpc = await RpcClient.connect({ host: '::1', transport: 'tcp', program, version: 1, timeoutMs: 2000 });
//   const stub = new RPC_ONE_Client(rpc, program);           // no port given: found through rpcbind
// try { await stub.REQUEST(p, { signal }) } catch (e) { if (e instanceof RpcError) e.kind; /* 'PROG_MISMATCH', ... */ }
//
// Handlers refuse a call by throwing RpcAuthError(AuthStat.X) (AUTH_ERROR) or RpcError('GARBAGE_ARGS' | 'PROC_UNAVAIL'
// | 'SYSTEM_ERR'); anything else thrown is SYSTEM_ERR.
export { RpcClient, NULL_PROCEDURE, xdrVoid, type RpcClientOptions } from './client';
export {
  RpcTlsServer,
  identityOf,
  startTls,
  AUTH_TLS,
  ALPN,
  STARTTLS,
  TLS_POLICIES,
  type TlsPolicy,
  type TlsIdentity,
  type TlsSession,
  type TlsMaterial,
  type TlsClientOptions,
  type TlsServerOptions,
  type TlsServerStats,
} from './tls';
export {
  RpcServer,
  type RpcServerOptions,
  type RpcServerStats,
  type ListenAddress,
  type BoundAddress,
  type ProcedurePolicy,
  type RegisterOptions,
} from './server';
export { RpcError, RpcAuthError, RpcAuthError as AuthError, AuthStat, authStatName, type RpcErrorKind } from './errors';
export {
  authNone,
  authSysServer,
  AuthSys,
  encodeAuthSys,
  decodeAuthSys,
  AUTH_SYS_MAX_GIDS,
  AUTH_SYS_MAX_MACHINENAME,
  type AuthSysParams,
  type ClientAuth,
  type ServerAuth,
} from './auth';
export { AUTH_NONE, AUTH_SYS, NULL_AUTH, AcceptStat, type CallHeader, type ReplyHeader } from './message';
export {
  registerService,
  unregisterService,
  lookupPort,
  toUniversalAddress,
  fromUniversalAddress,
  netidFor,
  RPCBIND_PROGRAM,
  RPCBIND_PORT,
  type RpcbindRegistration,
  type RpcbindTarget,
} from './rpcbind';
export type * from './types';
