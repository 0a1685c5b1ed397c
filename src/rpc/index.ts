// Public API of the ONC RPC runtime (RFC 5531): client, server, authentication flavors, errors and rpcbind helpers.
// Generated code (rpcgen-ts) builds on ./types and ./xdr/runtime; applications use what is exported here.
export { RpcClient, NULL_PROCEDURE, xdrVoid, type RpcClientOptions } from './client';
export { RpcServer, type RpcServerOptions, type RpcServerStats, type ListenAddress, type BoundAddress } from './server';
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
} from './rpcbind';
export type * from './types';
