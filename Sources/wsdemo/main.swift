print("wsdemo")
