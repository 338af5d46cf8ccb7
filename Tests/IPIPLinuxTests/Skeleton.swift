import Testing
@testable import IPIPLinux
