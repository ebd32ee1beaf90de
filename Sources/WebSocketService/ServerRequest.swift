/// One HTTP header line.
public struct HTTPHeader: Sendable, Hashable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// An HTTP request head as the routes see it: a page request, or a WebSocket
/// upgrade the engine has already validated.
public struct ServerRequest: Sendable {
    public var method: String
    /// The target before `?`.
    public var path: String
    /// The raw query after `?`, nil if none.
    public var query: String?
    public var headers: [HTTPHeader]
    /// "ip:port" or "[ipv6]:port".
    public var remoteAddress: String
    /// A valid WebSocket upgrade request.
    public var isUpgrade: Bool
    /// On a TLS listener, the host name the client asked for (SNI; "" if
    /// it named none); nil for a plain connection.
    public var tlsServerName: String?
    /// The request came over TLS (`wss://`, `https://`).
    public var isSecure: Bool { tlsServerName != nil }

    public init(method: String, path: String, query: String? = nil, headers: [HTTPHeader] = [],
                remoteAddress: String = "", isUpgrade: Bool = false) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.remoteAddress = remoteAddress
        self.isUpgrade = isUpgrade
    }

    /// The first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.utf8.count == name.utf8.count && $0.name.lowercased() == name.lowercased() }?.value
    }

    public var origin: String? { header("Origin") }

    /// The subprotocols the client offers (`Sec-WebSocket-Protocol`, every
    /// such header, in order), which an upgrade decision may pick from.
    public var subprotocols: [String] {
        headers.filter { $0.name.lowercased() == "sec-websocket-protocol" }
            .flatMap { $0.value.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
    }

    /// Percent-decoded query parameter (`+` is a space), the first with this name.
    public func queryItem(_ name: String) -> String? {
        guard let query else { return nil }
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if Self.percentDecode(parts[0]) == name {
                return parts.count > 1 ? Self.percentDecode(parts[1]) : ""
            }
        }
        return nil
    }

    /// Cookies from every `Cookie` header (`name=value; name2=value2`).
    public var cookies: [String: String] {
        var result: [String: String] = [:]
        for header in headers where header.name.lowercased() == "cookie" {
            for item in header.value.split(separator: ";") {
                let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = parts[0].trimmingSpaces
                guard !name.isEmpty, result[name] == nil else { continue }
                result[name] = parts.count > 1 ? parts[1].trimmingSpaces : ""
            }
        }
        return result
    }

    public func cookie(_ name: String) -> String? { cookies[name] }

    static func percentDecode(_ text: Substring) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        var bytes = text.utf8.makeIterator()
        while let byte = bytes.next() {
            switch byte {
            case UInt8(ascii: "+"): out.append(0x20)
            case UInt8(ascii: "%"):
                if let h = bytes.next(), let l = bytes.next(),
                   let hv = JSONScanner.hexValue(h), let lv = JSONScanner.hexValue(l) {
                    out.append(UInt8(hv << 4 | lv))
                } else {
                    out.append(byte) // malformed escapes are kept as sent
                }
            default: out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        var s = self[...]
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}

/// A plain HTTP response for a page, or for a refused upgrade.
public struct ServerResponse: Sendable {
    public var status: Int
    public var contentType: String
    /// Extra header lines (Content-Type and Content-Length are added by the engine).
    public var headers: [HTTPHeader]
    public var body: [UInt8]

    public init(status: Int = 200, contentType: String = "text/plain; charset=utf-8", headers: [HTTPHeader] = [],
                body: [UInt8] = []) {
        self.status = status
        self.contentType = contentType
        self.headers = headers
        self.body = body
    }

    public static func text(_ text: String, status: Int = 200) -> ServerResponse {
        ServerResponse(status: status, body: Array(text.utf8))
    }

    public static func html(_ html: String, status: Int = 200) -> ServerResponse {
        ServerResponse(status: status, contentType: "text/html; charset=utf-8", body: Array(html.utf8))
    }

    public static func json(_ json: RawJSON, status: Int = 200) -> ServerResponse {
        ServerResponse(status: status, contentType: "application/json", body: json.bytes)
    }

    /// A short text body naming the status.
    public static func status(_ status: Int, _ message: String? = nil) -> ServerResponse {
        .text(message ?? Self.reason(status), status: status)
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 429: "Too Many Requests"
        case 500: "Internal Server Error"
        case 503: "Service Unavailable"
        default: "HTTP \(status)"
        }
    }

    /// "Name: value\r\n" lines for the engine; header injection (CR/LF in a
    /// name or value) is refused by dropping the line.
    var headerLines: String? {
        guard !headers.isEmpty else { return nil }
        var lines = ""
        for header in headers {
            let bad = header.name.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == UInt8(ascii: ":") }
                || header.value.utf8.contains { $0 == 0x0D || $0 == 0x0A }
            if bad || header.name.isEmpty { continue }
            lines += "\(header.name): \(header.value)\r\n"
        }
        return lines.isEmpty ? nil : lines
    }
}
