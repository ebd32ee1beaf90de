import CWebSocket
import Foundation

extension Configuration {
    /// TLS on the listener (`wss://`, `https://`), done by the engine with
    /// OpenSSL on both backends: TLS 1.2 and 1.3, forward-secret AEAD suites,
    /// no renegotiation, ALPN `http/1.1`. Files are PEM and read when the
    /// server is made, and again by `WebSocketServer.reloadTLS(_:)`.
    ///
    /// Serve TLS here when this process faces the clients itself; prefer a
    /// terminating proxy when one already sits in front (then list it in
    /// `trustedProxies` so `Connection.clientAddress` stays the client's).
    public struct TLS: Sendable, Equatable {
        /// A certificate and its key, for one host name or as the default.
        public struct Identity: Sendable, Equatable {
            /// The host name (SNI) this identity serves: exact, or
            /// "*.example.com"; nil: the default, for clients that name no
            /// host or one that no identity matches.
            public var serverName: String?
            /// The certificate, then its intermediates.
            public var certificateChainFile: String
            /// The private key, unencrypted.
            public var privateKeyFile: String

            public init(serverName: String? = nil, certificateChainFile: String, privateKeyFile: String) {
                self.serverName = serverName
                self.certificateChainFile = certificateChainFile
                self.privateKeyFile = privateKeyFile
            }
        }

        /// The first identity without a `serverName` is the default (the
        /// first of all when every one has a name).
        public var identities: [Identity]
        /// Certificates of the authorities client certificates must chain
        /// to; nil: clients are not asked for one.
        public var clientCertificateAuthorityFile: String?
        /// With `clientCertificateAuthorityFile`: a client without a valid
        /// certificate fails the handshake (else it may go without one).
        public var requiresClientCertificate = false
        /// nil (the default): `Configuration.port` speaks TLS only. A port:
        /// `Configuration.port` stays plain and a second listener, on the
        /// same host and this port, speaks TLS (`ws://` and `wss://` side by
        /// side; 0: any free port, read `WebSocketServer.tlsPort`). Both share
        /// the loops, the routes and the limits; `ServerRequest.isSecure`
        /// tells them apart. Fixed when the server is made: a reload keeps it.
        public var port: Int?
        /// Kernel TLS for sending: after a TLS 1.3 handshake the session's
        /// sending keys go to the kernel (Linux's "tls" module), which
        /// encrypts what the engine writes, so a message is never copied
        /// into a record in user space; reading stays in user space. The
        /// server asks the kernel to load the module when it starts (which
        /// takes CAP_NET_ADMIN; else `modprobe tls`). Where the kernel has no
        /// such module (`WebSocketServer.kernelTLSAvailable` is false), or for
        /// a TLS 1.2 session, records are made in user space as without it. With it in use, sessions get no resumption tickets,
        /// and a client that asks for a key update is closed (the kernel
        /// cannot send one). Off by default.
        public var kernelOffload = false
        /// Tests only: the hand-off goes to a user-space writer of the records
        /// the kernel would make, so the keys and sequence a kernel would get
        /// are checked on a machine without the module.
        var emulatesKernelOffload = false

        /// One certificate for every host name.
        public init(certificateChainFile: String, privateKeyFile: String) {
            self.identities = [Identity(certificateChainFile: certificateChainFile, privateKeyFile: privateKeyFile)]
        }

        /// One identity per host name (SNI).
        public init(identities: [Identity]) {
            self.identities = identities
        }

        /// The engine's view of this configuration, valid during `body`.
        func withEngineConfiguration<R>(_ body: (UnsafePointer<cws_tls_config>) -> R) -> R {
            var strings: [UnsafeMutablePointer<CChar>] = []
            defer { strings.forEach { free($0) } }
            func copy(_ text: String?) -> UnsafePointer<CChar>? {
                guard let text, let copied = strdup(text) else { return nil }
                strings.append(copied)
                return UnsafePointer(copied)
            }
            let engineIdentities = identities.map {
                cws_tls_identity(server_name: copy($0.serverName), certificate_chain_file: copy($0.certificateChainFile),
                                 private_key_file: copy($0.privateKeyFile))
            }
            return engineIdentities.withUnsafeBufferPointer { buffer in
                var cfg = cws_tls_config()
                cfg.identities = buffer.baseAddress
                cfg.identity_count = UInt32(buffer.count)
                cfg.client_ca_file = copy(clientCertificateAuthorityFile)
                cfg.require_client_certificate = requiresClientCertificate ? 1 : 0
                cfg.kernel_offload = emulatesKernelOffload ? 2 : kernelOffload ? 1 : 0
                return withUnsafePointer(to: cfg) { body($0) }
            }
        }
    }
}
