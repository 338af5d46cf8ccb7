import IPIPDataplane
print("ipipctl")
