package exporterhttp

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds of a download's file name.
const (
	maxFilename  = 255 // bytes, as most file systems allow
	maxExtension = 16  // bytes with the dot; a longer "extension" is part of the name
)

// sanitizeFilename makes name safe to store, to send in a
// Content-Disposition header and to save on any file system: the last
// element of a path, with control and format characters (bidi overrides
// included), and the characters Windows forbids (<>:"|?*), replaced by "_",
// no leading or trailing dots or spaces, invalid UTF-8 replaced, and at
// most maxFilename bytes, shortened before its extension so that
// "report.csv" stays a ".csv". It returns "" when nothing is left.
func sanitizeFilename(name string) string {
	name = strings.ToValidUTF8(name, "_")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.In(r, unicode.Zl, unicode.Zp) ||
			strings.ContainsRune(`<>:"|?*`, r) {
			return '_'
		}
		return r
	}, name)
	name = strings.Trim(name, ". ")
	if len(name) <= maxFilename {
		return name
	}
	ext := extension(name)
	base := strings.TrimRight(cut(name[:len(name)-len(ext)], maxFilename-len(ext)), ". ")
	return base + ext
}

// extension returns the extension of name with its dot ("" if none): at
// most maxExtension bytes after the last dot, which is not the first byte.
func extension(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || len(name)-i > maxExtension || strings.ContainsRune(name[i:], ' ') {
		return ""
	}
	return name[i:]
}

// cut cuts s to at most n bytes on a UTF-8 boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// contentDisposition returns the Content-Disposition of a download of
// name, which sanitizeFilename returned (not empty): RFC 6266, with an
// ASCII fallback in filename (every other byte, the quote, the backslash
// and the percent sign as "_") for old clients, and the exact name in
// filename* (RFC 8187: UTF-8, percent-encoded), which clients prefer.
func contentDisposition(name string) string {
	var b strings.Builder
	b.WriteString(`attachment; filename="`)
	for _, r := range name {
		if r < 0x20 || r >= 0x7f || r == '"' || r == '\\' || r == '%' {
			r = '_'
		}
		b.WriteRune(r)
	}
	b.WriteString(`"; filename*=UTF-8''`)
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(name); i++ {
		if c := name[i]; isAttrChar(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// isAttrChar reports whether c is an attr-char of RFC 8187, which needs
// no percent-encoding.
func isAttrChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}
