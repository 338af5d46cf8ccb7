import CIPIPLinux
import Testing

@testable import IPIPLinux

@Test("the shim exposes the kernel constants the module needs")
func shimConstants() {
    #expect(cipl_tunsetiff() == 0x4004_54CA)
    #expect(IFF_TUN == 1 && IFF_NO_PI == 0x1000)
    #expect(NETLINK_ROUTE == 0)
    #expect(RTM_NEWROUTE == 24)
    #expect(MemoryLayout<cipl_mmsghdr>.size == 64)
}
