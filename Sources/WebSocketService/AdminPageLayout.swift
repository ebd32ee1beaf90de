import Foundation

/// What every admin page shares: the document around its body, the
/// security headers, and escaping for HTML and URLs.
extension AdminPages {
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for ch in text.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    static func percentEncode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    static func securityHeaders(nonce: String?) -> [HTTPHeader] {
        var csp = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        if let nonce { csp += "; script-src 'nonce-\(nonce)'; connect-src 'self'" }
        return [
            HTTPHeader("Content-Security-Policy", csp), HTTPHeader("X-Frame-Options", "DENY"),
            HTTPHeader("Referrer-Policy", "no-referrer"), HTTPHeader("Cache-Control", "no-store"),
            HTTPHeader("X-Content-Type-Options", "nosniff"),
        ]
    }

    static func html(_ title: String, _ body: String, status: Int = 200, script: String? = nil) -> ServerResponse {
        var nonce: String?
        if script != nil {
            var generator = SystemRandomNumberGenerator()
            nonce = String(generator.next() as UInt64, radix: 36) + String(generator.next() as UInt64, radix: 36)
        }
        var page = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title)) · admin</title>
        <style>
        \(styleSheet)
        </style></head><body>
        <nav><a href="\(root)">Connections &amp; channels</a><a href="\(root)/tap">Live tap</a></nav>
        <h1>\(escape(title))</h1>
        \(body)
        """
        if let script, let nonce { page += "\n<script nonce=\"\(nonce)\">\n\(script)\n</script>" }
        page += "\n</body></html>\n"
        return ServerResponse(status: status, contentType: "text/html; charset=utf-8", headers: securityHeaders(nonce: nonce),
                            body: Array(page.utf8))
    }
}
